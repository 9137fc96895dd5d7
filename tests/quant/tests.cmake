lclm_add_test(quant_test SOURCES
  ${CMAKE_CURRENT_SOURCE_DIR}/quant/blocks_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/quant/quantized_model_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/quant/quantized_lclm_test.cc)

# On the shipped model (models/lclm-small).
lclm_add_test(quant_e2e_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/quant/shipped_model_test.cc
              LABELS e2e)
