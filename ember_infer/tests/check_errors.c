/* check_errors_c MODEL: what only a C caller can get wrong (an element type or memory order
 * code, NULL pointers, a rank out of range, a file without its sidecar) is a status and a
 * message. Exits 0 when every case is reported as expected. */
#include <stdio.h>
#include <string.h>

#include "ember_infer.h"

static int failures = 0;

static void expect(int got, int want, const char *needle, const char *what) {
  const char *message = ember_last_error();
  if (got != want || !strstr(message, needle)) {
    printf("FAILED: %s: status %d (want %d), message \"%s\" (want it to contain \"%s\")\n", what, got, want, message, needle);
    ++failures;
  }
}

int main(int argc, char **argv) {
  (void)argc;
  ember_model *model = NULL;
  float x[8] = {0}, y[8] = {0};
  int64_t shape[1] = {8};
  expect(ember_load(NULL, &model), EMBER_ERR_ARGUMENT, "path", "NULL path");
  expect(ember_load(argv[0], &model), EMBER_ERR_FILE, ".json", "a file without its sidecar");
  expect(model == NULL, 1, "", "no model after a failed load");
  expect(ember_load(argv[1], &model), EMBER_OK, "", "load");
  expect(ember_forward(model, 7, EMBER_ROW_MAJOR, x, 1, shape, y, 1, shape), EMBER_ERR_DTYPE, "EMBER_FLOAT32", "element type 7");
  expect(ember_forward(model, EMBER_FLOAT32, 3, x, 1, shape, y, 1, shape), EMBER_ERR_ARGUMENT, "EMBER_ROW_MAJOR", "order 3");
  expect(ember_forward(model, EMBER_FLOAT32, EMBER_ROW_MAJOR, x, 0, shape, y, 1, shape), EMBER_ERR_ARGUMENT, "1 to 8 dimensions", "rank 0");
  expect(ember_forward(model, EMBER_FLOAT32, EMBER_ROW_MAJOR, NULL, 1, shape, y, 1, shape), EMBER_ERR_ARGUMENT, "input", "NULL input");
  expect(ember_forward(model, EMBER_FLOAT64, EMBER_ROW_MAJOR, x, 1, shape, y, 1, shape), EMBER_ERR_SHAPE, "(8,)", "a wrong shape");
  int64_t out[EMBER_MAX_DIMS];
  int out_ndim = 0;
  expect(ember_output_shape(model, 1, shape, out, &out_ndim), EMBER_ERR_SHAPE, "the model takes (batch", "output shape of a wrong input");
  ember_free(model);
  ember_free(NULL);
  printf("%s\n", failures ? "some errors were not reported as expected" : "all errors reported");
  return failures != 0;
}
