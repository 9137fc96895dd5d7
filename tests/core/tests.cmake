lclm_add_test(core_test SOURCES
  ${CMAKE_CURRENT_SOURCE_DIR}/core/safetensors_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/core/torch_file_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/core/kernels_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/core/bf16_gemm_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/core/sampler_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/core/thread_pool_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/core/model_test.cc)

# Forward-pass parity with the independent PyTorch reference (Debian's
# python3-torch), on tiny models written by lclm-make-model in every layout the
# loader accepts: bf16 tied, f32 untied in three shards, f16 without the
# "model." prefix.
add_executable(dump_logits ${CMAKE_CURRENT_SOURCE_DIR}/core/dump_logits.cc)
target_link_libraries(dump_logits PRIVATE lclm)
target_compile_options(dump_logits PRIVATE ${LCLM_WARNINGS})

set(PARITY_MODELS ${PROJECT_BINARY_DIR}/test-models)
set(PARITY_VARIANTS "bf16|--dtype bf16" "f32-untied-sharded|--dtype f32 --untied --shards 3"
                    "f16-bare|--dtype f16 --no-prefix")
foreach(variant ${PARITY_VARIANTS})
  string(REPLACE "|" ";" parts "${variant}")
  list(GET parts 0 name)
  list(GET parts 1 flags)
  separate_arguments(flags)
  add_test(NAME make_parity_model_${name}
           COMMAND lclm-make-model -o ${PARITY_MODELS}/${name} --seed 7 ${flags})
  set_tests_properties(make_parity_model_${name} PROPERTIES FIXTURES_SETUP parity_${name})
  add_test(NAME forward_parity_torch_${name}
           COMMAND ${LCLM_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/reference/check_forward.py
                   ${PARITY_MODELS}/${name} $<TARGET_FILE:dump_logits>)
  set_tests_properties(forward_parity_torch_${name} PROPERTIES FIXTURES_REQUIRED parity_${name}
                       LABELS parity)
endforeach()
