lclm_add_test(lclm_cli_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/cli/lclm_cli_test.cc)
