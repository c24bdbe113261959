/* ember_predict MODEL INPUT OUTPUT d0 d1 ...: run an ember TorchScript export on raw float32.
 *
 * INPUT holds d0*d1*... float32 values in C order (numpy: x.astype("float32").tofile(INPUT)),
 * batch first; OUTPUT receives the model's output the same way. Prints the output shape and,
 * for a 2-D output, the arg-max of each row (the class of a classifier).
 */
#include <stdio.h>
#include <stdlib.h>

#include "ember_infer.h"

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: %s MODEL INPUT OUTPUT d0 [d1 ...]\n", argv[0]);
    return 2;
  }
  int ndim = argc - 4;
  int64_t shape[8], out_shape[8], n = 1;
  if (ndim > 8) {
    fprintf(stderr, "error: at most 8 dimensions\n");
    return 2;
  }
  for (int i = 0; i < ndim; ++i) {
    shape[i] = atoll(argv[4 + i]);
    n *= shape[i];
  }
  float *x = malloc(n * sizeof(float));
  FILE *f = fopen(argv[2], "rb");
  if (!f || fread(x, sizeof(float), n, f) != (size_t)n) {
    fprintf(stderr, "error: cannot read %lld float32 values from %s\n", (long long)n, argv[2]);
    return 2;
  }
  fclose(f);

  ember_model *model = ember_load(argv[1]);
  if (!model) {
    fprintf(stderr, "error: %s\n", ember_last_error());
    return 1;
  }
  int64_t capacity = 1 << 24;
  float *y = malloc(capacity * sizeof(float));
  int out_ndim = 0;
  if (ember_forward(model, x, shape, ndim, y, capacity, out_shape, &out_ndim) != 0) {
    fprintf(stderr, "error: %s\n", ember_last_error());
    return 1;
  }
  int64_t m = 1;
  printf("output shape:");
  for (int i = 0; i < out_ndim; ++i) {
    printf(" %lld", (long long)out_shape[i]);
    m *= out_shape[i];
  }
  printf("\n");
  if (out_ndim == 2) {
    for (int64_t r = 0; r < out_shape[0]; ++r) {
      int64_t best = 0;
      for (int64_t c = 1; c < out_shape[1]; ++c)
        if (y[r * out_shape[1] + c] > y[r * out_shape[1] + best]) best = c;
      printf("row %lld: class %lld\n", (long long)r, (long long)best);
    }
  }
  FILE *g = fopen(argv[3], "wb");
  if (!g || fwrite(y, sizeof(float), m, g) != (size_t)m) {
    fprintf(stderr, "error: cannot write %s\n", argv[3]);
    return 1;
  }
  fclose(g);
  ember_free(model);
  free(x);
  free(y);
  return 0;
}
