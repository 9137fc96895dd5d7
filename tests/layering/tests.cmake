# The layers of src/ (docs/architecture.md): every include points down.
add_test(NAME layering COMMAND ${LCLM_PYTHON} ${PROJECT_SOURCE_DIR}/scripts/check_layers.py
                               ${PROJECT_SOURCE_DIR}/src)
# ... and the check can fail: a tree with one upward include.
add_test(NAME layering_refuses_an_upward_include
         COMMAND ${LCLM_PYTHON} ${PROJECT_SOURCE_DIR}/scripts/check_layers.py
                 ${CMAKE_CURRENT_SOURCE_DIR}/layering/upward)
set_tests_properties(layering_refuses_an_upward_include PROPERTIES
                     PASS_REGULAR_EXPRESSION "format/ includes runtime/, a layer above")
