# The libtorch trainer: parity of its LCLM with the engine on tiny random
# checkpoints in every configuration, gradients through all three parts, and
# checkpoint round trips (trainer -> disk -> trainer and engine); the
# training data, the four stages and exact resume.
# Torch's imported targets are visible only in the directory that finds them.
find_package(Torch REQUIRED)
lclm_add_test(trainer_test
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/trainer/torch_lclm_test.cc
          ${CMAKE_CURRENT_SOURCE_DIR}/trainer/lclm_checkpoint_test.cc
          ${CMAKE_CURRENT_SOURCE_DIR}/trainer/trainer_loop_test.cc
          ${CMAKE_CURRENT_SOURCE_DIR}/trainer/agent_data_test.cc
  LABELS trainer)
target_link_libraries(trainer_test PRIVATE lclm_train)

# The shipped model (models/lclm-small): trainer/engine parity (its recall:
# tests/eval/shipped_recall_test.cc).
lclm_add_test(shipped_model_test
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/trainer/shipped_model_test.cc
  LABELS "trainer;e2e;slow")
target_link_libraries(shipped_model_test PRIVATE lclm_train)

# IndexMem in the trainer: parity with the engine's policy, gradients, a short run.
lclm_add_test(indexmem_trainer_test
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/trainer/indexmem_trainer_test.cc
  LABELS trainer)
target_link_libraries(indexmem_trainer_test PRIVATE lclm_train)

# Data-parallel lclm-train: two ranks as processes on loopback against one
# process of twice the batch, resume, a rank that exits or hangs, ranks that
# start apart, torchrun's environment.
lclm_add_test(data_parallel_test
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/trainer/data_parallel_test.cc
  LABELS "trainer;slow")
target_link_libraries(data_parallel_test PRIVATE lclm_train)
add_dependencies(data_parallel_test lclm-train)
