// 64-byte aligned scratch buffer that only grows: packed panels and output tiles live in one
// of these per thread, so the hot loops never allocate.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>
#include <utility>

namespace axmoe {

template <typename T>
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t n) { Resize(n); }
  ~AlignedBuffer() { std::free(data_); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  AlignedBuffer(AlignedBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), capacity_(std::exchange(other.capacity_, 0)) {}
  AlignedBuffer& operator=(AlignedBuffer&& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(capacity_, other.capacity_);
    return *this;
  }

  // Room for n elements; contents are not preserved when it grows. Kernels read up to one
  // vector past their last element, so 64 bytes of slack are always kept.
  T* Resize(size_t n) {
    if (n > capacity_) {
      std::free(data_);
      size_t bytes = ((n * sizeof(T) + 64) + 63) / 64 * 64;
      data_ = static_cast<T*>(std::aligned_alloc(64, bytes));
      if (!data_) throw std::bad_alloc();
      capacity_ = n;
    }
    return data_;
  }
  T* data() const { return data_; }
  size_t capacity() const { return capacity_; }

 private:
  T* data_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace axmoe
