/* A C interface to an ember TorchScript export (`ember export run=DIR format=torchscript`).
 *
 * The exported model takes raw inputs (the run's normalization is inside it) and returns
 * logits for a classifier or values for a regression. Plain C types only, so C programs and
 * Fortran (through ISO_C_BINDING) can call it:
 *
 *   interface
 *     type(c_ptr) function ember_load(path) bind(c)
 *       import; character(kind=c_char) :: path(*)
 *     end function
 *     integer(c_int) function ember_forward(m, x, shape, ndim, y, capacity, yshape, yndim) bind(c)
 *       import; type(c_ptr), value :: m; real(c_float) :: x(*), y(*)
 *       integer(c_int64_t) :: shape(*), yshape(*); integer(c_int), value :: ndim
 *       integer(c_int64_t), value :: capacity; integer(c_int) :: yndim
 *     end function
 *   end interface
 *
 * (Fortran arrays are column-major: pass the shape reversed, or transpose first.)
 */
#ifndef EMBER_INFER_H
#define EMBER_INFER_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ember_model ember_model;

/* Load a TorchScript file; NULL on failure (see ember_last_error). */
ember_model *ember_load(const char *path);

/* Run the model on a float32 C-order array `input` of shape shape[0..ndim-1] (batch first).
 * Writes at most `capacity` floats to `output`, its shape to out_shape (room for 8 dims) and
 * the number of dims to out_ndim. Returns 0 on success, nonzero on failure. */
int ember_forward(ember_model *model, const float *input, const int64_t *shape, int ndim,
                  float *output, int64_t capacity, int64_t *out_shape, int *out_ndim);

void ember_free(ember_model *model);

/* The message of the last failure in this thread. */
const char *ember_last_error(void);

#ifdef __cplusplus
}
#endif

#endif
