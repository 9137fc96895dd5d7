add_executable(dump_logits ${CMAKE_CURRENT_SOURCE_DIR}/core/dump_logits.cc)
target_link_libraries(dump_logits PRIVATE lclm)
target_compile_options(dump_logits PRIVATE ${LCLM_WARNINGS})
