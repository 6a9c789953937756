// The sum of one vector over the CPU devices of one process, for the split training step
// (jaxcnn/spin_allreduce.py builds and loads this file; docs/performance.md says why).
//
// XLA:CPU's all-reduce makes the devices' threads meet at a mutex and condition variable, so the
// first to arrive sleeps, and on a VM whose idle vCPUs halt at once (haltpoll.guest_halt_poll_ns=0)
// each step pays two wake-ups through the hypervisor. Here the first to arrive spins instead, for
// up to kSpin, then yields, then sleeps in short naps.
//
// Each device copies its vector into its slot and arrives at a barrier (a counter that grows by the
// group's size each call); then every device sums all slots in device order, so each gets the same
// bits, the same as XLA's psum gives. Slots alternate between two sets call by call: a device may
// write call g + 1's vector while another still reads call g's, and it cannot reach call g + 2
// before every device has arrived at call g + 1, which is after each finished reading call g.
// That every device meets the same call of the same execution rests on XLA:CPU, which runs executions
// over several devices one at a time, in launch order (jaxlib 0.10.2): re-check it when jaxlib changes.
// As a check on it, every slot carries the execution's run id and the vector's length; a barrier that
// finds two of them refuses to add the vectors and fails the group from then on. A failed group is seen
// by devices still waiting at its barrier, so one device's error does not leave the others spinning.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>

#include "xla/ffi/api/ffi.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
static inline void CpuRelax() { _mm_pause(); }
#elif defined(__aarch64__)
static inline void CpuRelax() { asm volatile("yield" ::: "memory"); }
#else
static inline void CpuRelax() {}
#endif

namespace ffi = xla::ffi;
using Clock = std::chrono::steady_clock;

constexpr int64_t kMaxGroups = 4;
constexpr int64_t kMaxDevices = 8;
constexpr int64_t kSlotBytes = 1 << 18;   // 65,536 float32 or 32,768 float64 values
constexpr auto kSpin = std::chrono::microseconds(200);
constexpr auto kYield = std::chrono::milliseconds(2);
constexpr auto kNap = std::chrono::microseconds(50);
constexpr auto kGiveUp = std::chrono::minutes(10);   // of waiting: a stopped process (Ctrl-Z) does not count
constexpr auto kLongestPoll = std::chrono::milliseconds(100);

struct alignas(64) Slot {
  int64_t run_id;
  int64_t bytes;
  alignas(64) unsigned char data[kSlotBytes];
};

struct alignas(64) PerDevice {
  uint64_t calls;
};

struct Group {
  alignas(64) std::atomic<uint64_t> arrived{0};
  alignas(64) std::atomic<bool> failed{false};
  PerDevice device[kMaxDevices];
  Slot slots[2][kMaxDevices];
};

static Group groups[kMaxGroups];

extern "C" int64_t jaxcnn_spin_allreduce_capacity_bytes() { return kSlotBytes; }
extern "C" int64_t jaxcnn_spin_allreduce_max_groups() { return kMaxGroups; }
extern "C" int64_t jaxcnn_spin_allreduce_max_devices() { return kMaxDevices; }

enum class Wait { kArrived, kFailed, kGaveUp };

// Waits until the group's counter reaches `target`: spins, then yields, then naps. The time waited adds up
// the gaps between polls, each at most kLongestPoll, so a process stopped for an hour has not waited an hour.
static Wait WaitFor(const Group& group, uint64_t target) {
  auto last = Clock::now();
  Clock::duration waited{};
  for (uint32_t round = 0;; ++round) {
    if (group.arrived.load(std::memory_order_acquire) >= target) return Wait::kArrived;
    if ((round & 63) != 63) {
      CpuRelax();
      continue;
    }
    if (group.failed.load(std::memory_order_acquire)) return Wait::kFailed;
    auto now = Clock::now();
    waited += std::min<Clock::duration>(now - last, kLongestPoll);
    last = now;
    if (waited < kSpin) continue;
    if (waited > kGiveUp) return Wait::kGaveUp;
    if (waited < kYield) std::this_thread::yield();
    else std::this_thread::sleep_for(kNap);
  }
}

template <typename T>
static ffi::Error Sum(const T* in, T* out, int64_t n, int64_t run_id, int64_t group_id, int64_t device,
                      int64_t devices) {
  if (group_id < 0 || group_id >= kMaxGroups || devices < 1 || devices > kMaxDevices || device < 0 ||
      device >= devices || n * static_cast<int64_t>(sizeof(T)) > kSlotBytes) {
    if (group_id >= 0 && group_id < kMaxGroups) groups[group_id].failed.store(true, std::memory_order_release);
    return ffi::Error::InvalidArgument("jaxcnn spin all-reduce: group, device or length out of range");
  }
  Group& group = groups[group_id];
  if (group.failed.load(std::memory_order_acquire)) {
    return ffi::Error::Internal("jaxcnn spin all-reduce: this group failed before; restart the process, "
                                "or set JAXCNN_ALLREDUCE=xla");
  }
  uint64_t call = group.device[device].calls++;
  Slot* set = group.slots[call & 1];
  Slot& mine = set[device];
  mine.run_id = run_id;
  mine.bytes = n * static_cast<int64_t>(sizeof(T));
  std::memcpy(mine.data, in, mine.bytes);
  group.arrived.fetch_add(1, std::memory_order_acq_rel);
  switch (WaitFor(group, static_cast<uint64_t>(devices) * (call + 1))) {
    case Wait::kArrived:
      break;
    case Wait::kFailed:
      return ffi::Error::Internal("jaxcnn spin all-reduce: another device of this batch failed; restart the "
                                  "process, or set JAXCNN_ALLREDUCE=xla");
    case Wait::kGaveUp:
      group.failed.store(true, std::memory_order_release);
      return ffi::Error::Internal("jaxcnn spin all-reduce: device " + std::to_string(device) +
                                  " waited 10 minutes for the other devices of its batch");
  }
  for (int64_t d = 0; d < devices; ++d) {
    if (set[d].run_id != run_id || set[d].bytes != mine.bytes) {
      group.failed.store(true, std::memory_order_release);
      return ffi::Error::Internal("jaxcnn spin all-reduce: two executions met at one step (programs "
                                  "interleaved on the devices); set JAXCNN_ALLREDUCE=xla to run them so");
    }
  }
  std::memcpy(out, set[0].data, mine.bytes);
  for (int64_t d = 1; d < devices; ++d) {
    const T* other = reinterpret_cast<const T*>(set[d].data);
    for (int64_t i = 0; i < n; ++i) out[i] += other[i];
  }
  return ffi::Error::Success();
}

template <ffi::DataType dtype>
static ffi::Error SumHandler(ffi::RunId run, ffi::Buffer<dtype> x, ffi::Buffer<ffi::S32> device,
                             ffi::ResultBuffer<dtype> y, int64_t group, int64_t devices) {
  return Sum(x.typed_data(), y->typed_data(), static_cast<int64_t>(x.element_count()), run.run_id, group,
             static_cast<int64_t>(device.typed_data()[0]), devices);
}

#define JAXCNN_SUM_HANDLER(name, dtype)                                                  \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, SumHandler<dtype>,                                \
                                ffi::Ffi::Bind()                                        \
                                    .Ctx<ffi::RunId>()                                  \
                                    .Arg<ffi::Buffer<dtype>>()                          \
                                    .Arg<ffi::Buffer<ffi::S32>>()                       \
                                    .Ret<ffi::Buffer<dtype>>()                          \
                                    .Attr<int64_t>("group")                             \
                                    .Attr<int64_t>("devices"));

JAXCNN_SUM_HANDLER(jaxcnn_spin_allreduce_f32, ffi::F32)
JAXCNN_SUM_HANDLER(jaxcnn_spin_allreduce_f64, ffi::F64)
