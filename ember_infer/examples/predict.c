/* ember_predict MODEL INPUT OUTPUT d0 d1 ...: run an ember export (model.ts or model.aoti.pt2) on
 * raw float32 values.
 *
 * INPUT holds d0*d1*... float32 values in C order (numpy: x.astype("float32").tofile(INPUT)),
 * batch first; OUTPUT receives the model's output the same way. Prints the output shape and,
 * for a 2-D output, the arg-max of each row (the class of a classifier).
 */
#include <stdio.h>
#include <stdlib.h>

#include "ember_infer.h"

static int fail(const char *what) {
  fprintf(stderr, "error: %s\n", what);
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 5 || argc - 4 > EMBER_MAX_DIMS) {
    fprintf(stderr, "usage: %s MODEL INPUT OUTPUT d0 [d1 ...] (at most %d dimensions)\n", argv[0], EMBER_MAX_DIMS);
    return 2;
  }
  int ndim = argc - 4, out_ndim = 0;
  int64_t shape[EMBER_MAX_DIMS], out_shape[EMBER_MAX_DIMS], n = 1, m = 1;
  for (int i = 0; i < ndim; ++i) {
    shape[i] = atoll(argv[4 + i]);
    n *= shape[i];
  }
  ember_model *model = NULL;
  if (ember_load(argv[1], &model) != EMBER_OK) return fail(ember_last_error());
  if (ember_output_shape(model, ndim, shape, out_shape, &out_ndim) != EMBER_OK) return fail(ember_last_error());
  for (int i = 0; i < out_ndim; ++i) m *= out_shape[i];

  float *x = malloc(n * sizeof(float)), *y = malloc(m * sizeof(float));
  FILE *f = fopen(argv[2], "rb");
  if (!x || !y || !f || fread(x, sizeof(float), n, f) != (size_t)n) return fail("cannot read the input file's float32 values");
  fclose(f);
  if (ember_forward(model, EMBER_FLOAT32, EMBER_ROW_MAJOR, x, ndim, shape, y, out_ndim, out_shape) != EMBER_OK) return fail(ember_last_error());

  printf("output shape:");
  for (int i = 0; i < out_ndim; ++i) printf(" %lld", (long long)out_shape[i]);
  printf("\n");
  for (int64_t r = 0; out_ndim == 2 && r < out_shape[0]; ++r) {
    int64_t best = 0;
    for (int64_t c = 1; c < out_shape[1]; ++c)
      if (y[r * out_shape[1] + c] > y[r * out_shape[1] + best]) best = c;
    printf("row %lld: class %lld\n", (long long)r, (long long)best);
  }
  FILE *g = fopen(argv[3], "wb");
  if (!g || fwrite(y, sizeof(float), m, g) != (size_t)m) return fail("cannot write the output file");
  fclose(g);
  ember_free(model);
  free(x);
  free(y);
  return 0;
}
