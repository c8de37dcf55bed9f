// The shim's cuda_fp16.h: HIP-CPU's __half (IEEE binary16, round to nearest) and its
// conversions, __half2float and __float2half.
#pragma once
#include "sim.h"
