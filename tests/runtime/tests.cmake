lclm_add_test(runtime_test SOURCES
  ${CMAKE_CURRENT_SOURCE_DIR}/runtime/session_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/runtime/engine_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/runtime/decode_batch_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/runtime/scoring_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/runtime/json_schema_test.cc)

# The chat template renderer against Python's jinja2 (LCLM_PYTHON with
# Debian's python3-jinja2); the parity tests skip without it.
lclm_add_test(jinja_test SOURCES
  ${CMAKE_CURRENT_SOURCE_DIR}/runtime/jinja_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/runtime/chat_template_test.cc
  LABELS parity)
