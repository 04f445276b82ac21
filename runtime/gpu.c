/* aitbc.native.gpu: NVIDIA GPUs through NVML, loaded with dlopen at run
 * time so that the binary builds and runs without a driver.
 *   list() -> {{index, name, uuid, memory_total, memory_used, utilization_gpu,
 *              utilization_memory, temperature_c, power_w}, ...}, driver
 *          | {}, reason   (no driver, no GPU: an empty list and why)
 * Readings a GPU does not support are left out (nil). */
#include <dlfcn.h>
#include <pthread.h>
#include <string.h>

#include "aitbc.h"

/* The few NVML types used, as nvml.h defines them (ABI-stable). */
typedef int nvml_return;
typedef void *nvml_device;
typedef struct {
  unsigned long long total, free, used;
} nvml_memory;
typedef struct {
  unsigned int gpu, memory;
} nvml_utilization;
#define NVML_SUCCESS 0
#define NVML_TEMPERATURE_GPU 0

static struct {
  nvml_return (*init)(void);
  nvml_return (*count)(unsigned int *);
  nvml_return (*handle)(unsigned int, nvml_device *);
  nvml_return (*name)(nvml_device, char *, unsigned int);
  nvml_return (*uuid)(nvml_device, char *, unsigned int);
  nvml_return (*memory)(nvml_device, nvml_memory *);
  nvml_return (*utilization)(nvml_device, nvml_utilization *);
  nvml_return (*temperature)(nvml_device, int, unsigned int *);
  nvml_return (*power)(nvml_device, unsigned int *);
  nvml_return (*driver)(char *, unsigned int);
  const char *(*error_string)(nvml_return);
} nvml;
static const char *nvml_unavailable; /* why there is no NVML, or NULL */

static void nvml_load(void) {
  void *lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    nvml_unavailable = "no NVIDIA driver: libnvidia-ml.so.1 could not be loaded";
    return;
  }
  *(void **)&nvml.init = dlsym(lib, "nvmlInit_v2");
  *(void **)&nvml.count = dlsym(lib, "nvmlDeviceGetCount_v2");
  *(void **)&nvml.handle = dlsym(lib, "nvmlDeviceGetHandleByIndex_v2");
  *(void **)&nvml.name = dlsym(lib, "nvmlDeviceGetName");
  *(void **)&nvml.uuid = dlsym(lib, "nvmlDeviceGetUUID");
  *(void **)&nvml.memory = dlsym(lib, "nvmlDeviceGetMemoryInfo");
  *(void **)&nvml.utilization = dlsym(lib, "nvmlDeviceGetUtilizationRates");
  *(void **)&nvml.temperature = dlsym(lib, "nvmlDeviceGetTemperature");
  *(void **)&nvml.power = dlsym(lib, "nvmlDeviceGetPowerUsage");
  *(void **)&nvml.driver = dlsym(lib, "nvmlSystemGetDriverVersion");
  *(void **)&nvml.error_string = dlsym(lib, "nvmlErrorString");
  if (!nvml.init || !nvml.count || !nvml.handle || !nvml.name || !nvml.memory) {
    nvml_unavailable = "libnvidia-ml.so.1 lacks the NVML functions aitbc needs";
    return;
  }
  nvml_return rc = nvml.init();
  if (rc != NVML_SUCCESS) nvml_unavailable = nvml.error_string ? nvml.error_string(rc) : "nvmlInit failed";
}

static void set_int(lua_State *L, const char *key, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, key);
}

static void push_device(lua_State *L, unsigned int i, nvml_device dev) {
  char text[256];
  lua_createtable(L, 0, 9);
  set_int(L, "index", i);
  if (nvml.name(dev, text, sizeof text) == NVML_SUCCESS) {
    lua_pushstring(L, text);
    lua_setfield(L, -2, "name");
  }
  if (nvml.uuid && nvml.uuid(dev, text, sizeof text) == NVML_SUCCESS) {
    lua_pushstring(L, text);
    lua_setfield(L, -2, "uuid");
  }
  nvml_memory mem;
  if (nvml.memory(dev, &mem) == NVML_SUCCESS) {
    set_int(L, "memory_total", (lua_Integer)mem.total);
    set_int(L, "memory_used", (lua_Integer)mem.used);
  }
  nvml_utilization util;
  if (nvml.utilization && nvml.utilization(dev, &util) == NVML_SUCCESS) {
    set_int(L, "utilization_gpu", util.gpu);
    set_int(L, "utilization_memory", util.memory);
  }
  unsigned int value;
  if (nvml.temperature && nvml.temperature(dev, NVML_TEMPERATURE_GPU, &value) == NVML_SUCCESS)
    set_int(L, "temperature_c", value);
  if (nvml.power && nvml.power(dev, &value) == NVML_SUCCESS) {
    lua_pushnumber(L, value / 1000.0); /* milliwatts */
    lua_setfield(L, -2, "power_w");
  }
}

static int l_list(lua_State *L) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, nvml_load);
  lua_newtable(L);
  if (nvml_unavailable) {
    lua_pushstring(L, nvml_unavailable);
    return 2;
  }
  unsigned int count = 0;
  nvml_return rc = nvml.count(&count);
  if (rc != NVML_SUCCESS || count == 0) {
    lua_pushstring(L, rc != NVML_SUCCESS && nvml.error_string ? nvml.error_string(rc) : "the driver reports no GPU");
    return 2;
  }
  for (unsigned int i = 0; i < count; i++) {
    nvml_device dev;
    if (nvml.handle(i, &dev) != NVML_SUCCESS) continue;
    push_device(L, i, dev);
    lua_rawseti(L, -2, (lua_Integer)luaL_len(L, -2) + 1);
  }
  char version[96];
  if (nvml.driver && nvml.driver(version, sizeof version) == NVML_SUCCESS)
    lua_pushfstring(L, "NVIDIA driver %s", version);
  else
    lua_pushliteral(L, "NVIDIA driver");
  return 2;
}

int luaopen_aitbc_native_gpu(lua_State *L) {
  lua_newtable(L);
  lua_pushcfunction(L, l_list);
  lua_setfield(L, -2, "list");
  return 1;
}
