lclm_add_test(compression_test SOURCES
  ${CMAKE_CURRENT_SOURCE_DIR}/compression/memory_regions_test.cc
  ${CMAKE_CURRENT_SOURCE_DIR}/compression/latent_cache_test.cc)
target_link_libraries(compression_test PRIVATE PkgConfig::SQLITE3)
