# The server over loopback with cpp-httplib's client (same compile flags as the library's build).
lclm_add_test(server_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/server/server_test.cc)
target_link_libraries(server_test PRIVATE PkgConfig::HTTPLIB PkgConfig::HIREDIS)
# ServeCommand runs build/bin/lclm serve in its own process.
add_dependencies(server_test lclm_main)
# The official openai npm client against `lclm serve` on the shipped model
# (tests/server/openai_client.mjs; the package comes with scripts/fetch_tokenizer.sh).
add_test(NAME openai_npm_client
         COMMAND node ${CMAKE_CURRENT_SOURCE_DIR}/server/openai_client.mjs $<TARGET_FILE:lclm_main>
                 ${PROJECT_SOURCE_DIR}/models/lclm-small ${PROJECT_SOURCE_DIR}/third_party/node/node_modules)
set_tests_properties(openai_npm_client PROPERTIES LABELS "slow" TIMEOUT 300)

# Tool calling in the OpenAI layer, without a model.
lclm_add_test(openai_tools_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/server/openai_tools_test.cc)
