lclm_add_test(agent_test SOURCES
  ${CMAKE_CURRENT_SOURCE_DIR}/agent/agent_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/agent/agent_cli_test.cc)
# `lclm agent` on the shipped model (models/lclm-small).
lclm_add_test(agent_e2e_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/agent/agent_e2e_test.cc
  LABELS "e2e;slow")
