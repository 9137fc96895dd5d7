# The Python module's tests (python3 -m unittest) against the module built in
# build/python, the shipped model and the lclm CLI as references.
add_test(NAME python_module
         COMMAND ${LCLM_PYTHON} -m unittest discover -s ${CMAKE_CURRENT_SOURCE_DIR}/python -v)
set_tests_properties(python_module PROPERTIES
  ENVIRONMENT "PYTHONPATH=${PROJECT_BINARY_DIR}/python;LCLM_SOURCE_DIR=${PROJECT_SOURCE_DIR};LCLM_BINARY_DIR=${PROJECT_BINARY_DIR}"
  LABELS "slow" TIMEOUT 600)
