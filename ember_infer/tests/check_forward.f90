! check_forward MODEL CASE...: the model on each case's input, as real32 and as real64 arrays of
! the case's rank, against Python's output for it (one process: libtorch loads once).
!
! CASE.txt: the input's rank and shape, the output's rank and shape, then atol and rtol;
! CASE.x and CASE.y: the input and Python's output, float64 in Fortran (column-major) order.
program check_forward
  use, intrinsic :: iso_fortran_env, only: real32, real64
  use ember_infer
  use checks, only: check, forward_flat, read_case, values
  implicit none
  type(ember_model) :: model
  character(len=1024) :: path, case
  integer, allocatable :: xs(:), ys(:)
  integer :: status, i
  real(real64) :: atol, rtol, err, limit
  real(real64), allocatable :: x(:), want(:), y(:)
  real(real32), allocatable :: x32(:), y32(:)

  call get_command_argument(1, path)
  call ember_load(model, path, status)
  call check(status == EMBER_OK, 'load: ' // ember_last_error())
  do i = 2, command_argument_count()
    call get_command_argument(i, case)
    call read_case(case, xs, ys, atol, rtol)
    x = values(trim(case) // '.x', product(xs))
    want = values(trim(case) // '.y', product(ys))
    limit = atol + rtol * maxval(abs(want))
    if (allocated(y)) deallocate(y, y32)
    allocate(y(size(want)), y32(size(want)))

    call forward_flat(model, x, xs, y, ys, status)
    call check(status == EMBER_OK, 'forward real64: ' // ember_last_error())
    err = maxval(abs(y - want))
    print '(a, a, es10.3, a, es10.3)', trim(case), ' real64: max abs error ', err, ', tolerance ', limit
    call check(err <= limit, 'the real64 output differs from Python''s')

    x32 = real(x, real32)
    call forward_flat(model, x32, xs, y32, ys, status)
    call check(status == EMBER_OK, 'forward real32: ' // ember_last_error())
    err = maxval(abs(real(y32, real64) - want))
    print '(a, a, es10.3, a, es10.3)', trim(case), ' real32: max abs error ', err, ', tolerance ', limit
    call check(err <= limit, 'the real32 output differs from Python''s')
  end do
  call ember_free(model)

end program check_forward
