# The evaluation harness: scoring, RULER-style tasks, the evaluator on a tiny
# random LCLM, reports, and `lclm eval` / `lclm bench`.
lclm_add_test(eval_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/eval/eval_test.cc)
# The harness on the shipped model; skipped until models/lclm-small exists.
lclm_add_test(eval_e2e_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/eval/eval_e2e_test.cc
              LABELS e2e slow)
# The shipped model's recall held to floors under its model card's numbers.
lclm_add_test(shipped_recall_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/eval/shipped_recall_test.cc
              LABELS e2e slow)
