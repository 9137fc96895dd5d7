# KV-cache policies: key scores, selection rules, compaction, budgets on a tiny model.
lclm_add_test(kv_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/kv/kv_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/kv/indexmem_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/kv/cache_types_test.cc)
