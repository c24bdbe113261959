/* ember_infer: run an ember export (TorchScript `model.ts` or AOTInductor `model.aoti.pt2`) from
 * C, C++ or Fortran (the module `ember_infer` in ember_infer.mod wraps these functions).
 *
 * The exported model takes raw inputs (the run's normalization is inside it) and returns logits
 * for a classifier or values in the data's units for a regression. ember_load reads the export's
 * sidecar `<path>.json` (written by `ember export` beside the model): its `format` says which
 * runtime loads the file, and its input shape is checked on every call, so an array in the
 * wrong layout is an error, not wrong numbers.
 *
 * Every function returns EMBER_OK (0) or an error code; ember_last_error() then holds a one-line
 * message. No C++ exception crosses this interface. Strings are NUL-terminated.
 */
#ifndef EMBER_INFER_H
#define EMBER_INFER_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ember_model ember_model;

/* Status codes (the Fortran module has the same names). */
enum {
  EMBER_OK = 0,
  EMBER_ERR_FILE = 1,     /* missing or unreadable model or sidecar, or a format ember_infer does not run */
  EMBER_ERR_SHAPE = 2,    /* the input or output array's shape is not the model's */
  EMBER_ERR_DTYPE = 3,    /* an element type other than EMBER_FLOAT32 and EMBER_FLOAT64 */
  EMBER_ERR_RUNTIME = 4,  /* the model failed while running */
  EMBER_ERR_ARGUMENT = 5  /* a NULL pointer or a rank outside 1..EMBER_MAX_DIMS */
};

/* Element types of the arrays: the model computes in its own precision (float32 for ember's
 * exports), converting on the way in and out. */
enum { EMBER_FLOAT32 = 0, EMBER_FLOAT64 = 1 };

/* Memory order of the arrays. The shape is always the tensor's, batch first:
 *   EMBER_ROW_MAJOR     C: the last index varies fastest (numpy's default).
 *   EMBER_COLUMN_MAJOR  Fortran: the first index varies fastest; a Fortran array x(n1, ..., nk) is
 *                       the tensor of shape (n1, ..., nk), as in FTorch. */
enum { EMBER_ROW_MAJOR = 0, EMBER_COLUMN_MAJOR = 1 };

#define EMBER_MAX_DIMS 8

/* Load the export at `path`; on success *model holds it (free it with ember_free). */
int ember_load(const char *path, ember_model **model);

/* The output shape for an input of shape shape[0..ndim-1], from the sidecar (checks the input
 * shape first): out_shape needs room for EMBER_MAX_DIMS values. */
int ember_output_shape(const ember_model *model, int ndim, const int64_t *shape, int64_t *out_shape, int *out_ndim);

/* Run the model on `input` (shape shape[0..ndim-1]) and write its output, which must have the
 * shape out_shape[0..out_ndim-1], to `output`. Both arrays hold `dtype` elements in `order`. */
int ember_forward(ember_model *model, int dtype, int order, const void *input, int ndim, const int64_t *shape,
                  void *output, int out_ndim, const int64_t *out_shape);

/* Release a model (NULL is allowed). */
void ember_free(ember_model *model);

/* The message of the last failure in this thread ("" if none). */
const char *ember_last_error(void);

#ifdef __cplusplus
}
#endif

#endif
