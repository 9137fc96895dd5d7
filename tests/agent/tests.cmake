lclm_add_test(agent_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/agent/agent_test.cc)
