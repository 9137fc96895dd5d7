lclm_add_test(tokenizer_test
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer/tokenizer_test.cc
  LABELS tokenizer)

lclm_add_test(truncated_vocab_test
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer/truncated_vocab_test.cc
  LABELS tokenizer)

# Encodes a JSONL corpus with lclm and compares with reference ids.
add_executable(tokenize_jsonl ${CMAKE_CURRENT_SOURCE_DIR}/tokenizer/tokenize_jsonl.cc)
target_link_libraries(tokenize_jsonl PRIVATE lclm CLI11::CLI11 PkgConfig::UTF8PROC)
target_compile_options(tokenize_jsonl PRIVATE ${LCLM_WARNINGS})

# Parity with the JavaScript reference tokenizers over a 1.6 MB corpus, in
# three steps that run once per ctest invocation: build the corpus, encode it
# with the references (cached in the build dir by corpus and tokenizer hash),
# encode it with lclm and compare. The last two are skipped (exit 77) when
# scripts/fetch_tokenizer.sh has not been run.
find_package(Python3 COMPONENTS Interpreter)
find_program(LCLM_NODE_EXECUTABLE node)
if(NOT Python3_Interpreter_FOUND OR NOT LCLM_NODE_EXECUTABLE)
  message(WARNING "python3 or node not found: the tokenizer parity tests are not registered")
  return()
endif()

set(tokenizer_reference_dir ${PROJECT_SOURCE_DIR}/tests/reference/tokenizer)
set(tokenizer_parity_dir ${PROJECT_BINARY_DIR}/tokenizer_parity)
set(qwen3_tokenizer_json ${PROJECT_SOURCE_DIR}/third_party/qwen3-tokenizer/tokenizer.json)

add_test(NAME tokenizer_parity_corpus
  COMMAND ${Python3_EXECUTABLE} ${tokenizer_reference_dir}/make_corpus.py
          --output ${tokenizer_parity_dir}/corpus.jsonl)
set_tests_properties(tokenizer_parity_corpus PROPERTIES
  FIXTURES_SETUP tokenizer_corpus LABELS tokenizer)

add_test(NAME tokenizer_parity_reference
  COMMAND ${LCLM_NODE_EXECUTABLE} ${tokenizer_reference_dir}/encode_reference.mjs
          --corpus ${tokenizer_parity_dir}/corpus.jsonl
          --output ${tokenizer_parity_dir}/reference_ids.jsonl)
set_tests_properties(tokenizer_parity_reference PROPERTIES
  FIXTURES_SETUP tokenizer_reference FIXTURES_REQUIRED tokenizer_corpus
  SKIP_RETURN_CODE 77 TIMEOUT 300 LABELS tokenizer)

add_test(NAME tokenizer_parity
  COMMAND tokenize_jsonl --skip-if-no-tokenizer
          --tokenizer ${qwen3_tokenizer_json}
          --corpus ${tokenizer_parity_dir}/corpus.jsonl
          --expect ${tokenizer_parity_dir}/reference_ids.jsonl)
set_tests_properties(tokenizer_parity PROPERTIES
  FIXTURES_REQUIRED "tokenizer_corpus;tokenizer_reference" SKIP_RETURN_CODE 77 LABELS tokenizer)
