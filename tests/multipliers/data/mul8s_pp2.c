/* An EvoApproxLib-style signed model: partial products with i + j < 2 removed (= mul8s_1KV8). */
#include <stdint.h>
#include <stdlib.h>
/* MAE = 1.2, WCE = 5.0, EP = 50.0 %  (header comment as in EvoApproxLib) */
int16_t mul8s_pp2(int8_t A, int8_t B)
{
  int16_t P = 0;
  uint8_t a = A, b = B;
  for (int i = 0; i < 8; i++)
    for (int j = 0; j < 8; j++) {
      if (i + j < 2) continue;
      int bit = ((a >> i) & 1) & ((b >> j) & 1);
      int w = 1 << (i + j);
      if ((i == 7) != (j == 7)) w = -w;
      P += bit * w;
    }
  return P;
}
