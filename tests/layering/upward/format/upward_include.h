// A base-layer header that reaches up to the runtime: check_layers.py must
// refuse this tree (tests/layering/tests.cmake). Never compiled.
#pragma once

#include "runtime/engine.h"
