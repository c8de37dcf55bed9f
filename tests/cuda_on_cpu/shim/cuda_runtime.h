// The shim's cuda_runtime.h: see sim.h.
#pragma once
#include "sim.h"
