# Seeded mutation fuzzing of the file formats and the region parser: every
# mutant is used or refused with lclm::Error (tests/fuzz/fuzz_test.cc).
lclm_add_test(fuzz_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_test.cc LABELS fuzz)
