lclm_add_test(compression_test SOURCES
  ${CMAKE_CURRENT_SOURCE_DIR}/compression/memory_regions_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/compression/latent_cache_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/compression/lclm_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/compression/adapter_test.cc)
target_link_libraries(compression_test PRIVATE PkgConfig::SQLITE3 PkgConfig::HIREDIS)

# LCLM prompt path (windows, pooling, adapter, splice, decoder logits) against
# the independent PyTorch reference, on tiny checkpoints written by
# lclm-make-model in every configuration the loader accepts. Small windows and
# regions of ~70 encoder tokens exercise the tiling (several windows, a short
# last window, a short last group).
add_executable(lclm_dump ${CMAKE_CURRENT_SOURCE_DIR}/compression/lclm_dump.cc)
target_link_libraries(lclm_dump PRIVATE lclm)
target_compile_options(lclm_dump PRIVATE ${LCLM_WARNINGS})

set(LCLM_PARITY_VARIANTS
    # The released configuration (mean pooling, causal encoder, MLP adapter).
    "mean-causal-mlp-r4|--window 16"
    # With a causal mask only eos slots can see right context, which must not
    # be there: overlap here catches it.
    "eos-causal-overlap2-r4|--pooling eos --overlap 2 --window 16"
    # eos slots come after the right context.
    "eos-bidirectional-overlap2-r4|--pooling eos --mask bidirectional --overlap 2 --window 16"
    "concat-bidirectional-mlp-r4|--pooling concat --mask bidirectional --window 16"
    "mean-bidirectional-overlap3-r4|--mask bidirectional --overlap 3 --window 16"
    "mean-causal-overlap5-r8|--ratio 8 --window 24 --overlap 5"
    "mean-causal-mlp_attn2-r4|--adapter mlp_attn --adapter-layers 2 --window 16"
    "mean-causal-attn_mlp1-r4|--adapter attn_mlp --adapter-layers 1 --window 16"
    "mean-causal-mlp-r3|--ratio 3 --window 15"
    "mean-causal-mlp-r4-f32|--dtype f32 --window 16")
set(lclm_parity_models ${PROJECT_BINARY_DIR}/test-models)
set(lclm_parity_seed 20)
foreach(variant ${LCLM_PARITY_VARIANTS})
  string(REPLACE "|" ";" parts "${variant}")
  list(GET parts 0 name)
  list(GET parts 1 flags)
  separate_arguments(flags)
  math(EXPR lclm_parity_seed "${lclm_parity_seed} + 1")
  add_test(NAME make_lclm_model_${name}
           COMMAND lclm-make-model -o ${lclm_parity_models}/lclm-${name} --lclm
                   --tokenizer-dir ${PROJECT_SOURCE_DIR}/third_party/qwen3-tokenizer
                   --seed ${lclm_parity_seed} ${flags})
  set_tests_properties(make_lclm_model_${name} PROPERTIES FIXTURES_SETUP lclm_${name})
  add_test(NAME lclm_parity_torch_${name}
           COMMAND ${LCLM_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/reference/check_lclm.py
                   ${lclm_parity_models}/lclm-${name} $<TARGET_FILE:lclm_dump>)
  # Against the exact reference: products with bf16 weights keep x exact.
  set_tests_properties(lclm_parity_torch_${name} PROPERTIES FIXTURES_REQUIRED lclm_${name}
                       LABELS parity ENVIRONMENT LCLM_BF16_ACTIVATIONS=split)
endforeach()

# Windows, model_config.json, adapter shapes, prompt splicing, latent cache and
# ratio override of LclmModel (GoogleTest, in the compression_test binary).
