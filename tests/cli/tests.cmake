lclm_add_test(cli_test SOURCES
  ${CMAKE_CURRENT_SOURCE_DIR}/cli/cli_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/cli/lclm_cli_test.cc)
# Two processes sharing a Redis latent store run build/bin/lclm; the test's
# own redis-server is driven through hiredis.
target_link_libraries(cli_test PRIVATE PkgConfig::HIREDIS)
add_dependencies(cli_test lclm_main)
