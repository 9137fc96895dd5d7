# The evaluation harness: scoring, RULER-style tasks, the evaluator on a tiny
# random LCLM, reports, and `lclm eval` / `lclm bench`.
lclm_add_test(eval_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/eval/eval_test.cc)
