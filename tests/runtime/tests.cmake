lclm_add_test(runtime_test SOURCES
  ${CMAKE_CURRENT_SOURCE_DIR}/runtime/session_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/runtime/engine_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/runtime/decode_batch_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/runtime/scoring_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/runtime/json_schema_test.cc)
