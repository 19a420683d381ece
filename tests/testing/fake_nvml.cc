/* A stand-in for the driver's libnvidia-ml.so.1 (the NVML C API, as nvml.h
 * declares it) for tests/metrics: two GPUs with fixed readings; the second has
 * no power reading (as on boards where NVML refuses it). */
#include <cstdio>

extern "C" {

typedef int nvmlReturn_t;
typedef struct {
  unsigned int gpu, memory;
} nvmlUtilization_t;
typedef struct {
  unsigned long long total, free, used;
} nvmlMemory_t;
static int devices[2];
static int initialised;

nvmlReturn_t nvmlInit_v2(void) {
  initialised = 1;
  return 0;
}
nvmlReturn_t nvmlShutdown(void) {
  initialised = 0;
  return 0;
}
nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int* n) {
  *n = 2;
  return initialised ? 0 : 1;
}
nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int i, void** h) {
  if (i >= 2) return 2;
  *h = &devices[i];
  return 0;
}
static int Index(void* h) { return h == &devices[1] ? 1 : 0; }
nvmlReturn_t nvmlDeviceGetUUID(void* h, char* out, unsigned int n) {
  snprintf(out, n, "GPU-fake-%d", Index(h));
  return 0;
}
nvmlReturn_t nvmlDeviceGetUtilizationRates(void* h, nvmlUtilization_t* u) {
  u->gpu = Index(h) == 0 ? 75 : 5;
  u->memory = 10;
  return 0;
}
nvmlReturn_t nvmlDeviceGetMemoryInfo(void* h, nvmlMemory_t* m) {
  m->total = 150ull << 30;
  m->used = (unsigned long long)(Index(h) + 1) << 30;
  m->free = m->total - m->used;
  return 0;
}
nvmlReturn_t nvmlDeviceGetPowerUsage(void* h, unsigned int* mw) {
  if (Index(h) == 1) return 3; /* NVML_ERROR_NOT_SUPPORTED */
  *mw = 123456;
  return 0;
}
}  // extern "C"
