lclm_add_test(cli_test SOURCES
  ${CMAKE_CURRENT_SOURCE_DIR}/cli/cli_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/cli/lclm_cli_test.cc)
