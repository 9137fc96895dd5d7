lclm_add_test(quant_test SOURCES
  ${CMAKE_CURRENT_SOURCE_DIR}/quant/blocks_test.cc)
