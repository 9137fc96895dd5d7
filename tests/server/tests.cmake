# The server over loopback with cpp-httplib's client (same compile flags as the library's build).
lclm_add_test(server_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/server/server_test.cc)
target_link_libraries(server_test PRIVATE PkgConfig::HTTPLIB)
# ServeCommand runs build/bin/lclm serve in its own process.
add_dependencies(server_test lclm_main)

# Tool calling in the OpenAI layer, without a model.
lclm_add_test(openai_tools_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/server/openai_tools_test.cc)
