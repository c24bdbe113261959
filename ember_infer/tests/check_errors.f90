! check_errors MODEL CASE DATA: a caller's mistakes are a status and a message, never a crash or
! silently wrong numbers; and a success after a failure works and clears the message.
program check_errors
  use, intrinsic :: iso_fortran_env, only: real32, real64
  use ember_infer
  use checks, only: check, forward_flat, read_case
  implicit none
  type(ember_model) :: model, never_loaded
  character(len=1024) :: path, case, data
  integer, allocatable :: xs(:), ys(:)
  integer :: status
  real(real64) :: atol, rtol
  real(real64), allocatable :: x(:), y(:), longer(:)
  real(real32) :: x1(7), y1(7), x5(1, 1, 1, 1, 1), y2(1, 1)

  call get_command_argument(1, path)
  call get_command_argument(2, case)
  call get_command_argument(3, data)
  call read_case(case, xs, ys, atol, rtol)
  allocate(x(product(xs)), y(product(ys)))
  x = 1

  ! A missing file, and a file that is no model (its sidecar is fine): EMBER_ERR_FILE, named.
  call ember_load(model, trim(data) // '/missing.aoti.pt2', status)
  call check(status == EMBER_ERR_FILE .and. index(ember_last_error(), 'missing.aoti.pt2') > 0, &
             'missing file: ' // ember_last_error())
  call ember_load(model, trim(data) // '/garbage.aoti.pt2', status)
  call check(status == EMBER_ERR_FILE .and. index(ember_last_error(), 'garbage.aoti.pt2') > 0, 'bad file: ' // ember_last_error())
  ! A model never loaded.
  call ember_forward(never_loaded, x1, y1, status)
  call check(status == EMBER_ERR_ARGUMENT, 'forward before load: ' // ember_last_error())

  call ember_load(model, path, status)
  call check(status == EMBER_OK, 'load: ' // ember_last_error())
  ! The input held in C's order (the shape reversed), what passing FTorch-style arrays to a
  ! row-major library amounts to: EMBER_ERR_SHAPE, naming the given and the expected shape.
  call forward_flat(model, x, xs(size(xs):1:-1), y, ys, status)
  call check(status == EMBER_ERR_SHAPE, 'reversed input: ' // ember_last_error())
  call check(index(ember_last_error(), 'input of shape ' // shape_text(xs(size(xs):1:-1))) > 0, &
             'message without the given shape: ' // ember_last_error())
  call check(index(ember_last_error(), 'the model takes (batch') > 0, 'message without the expected shape: ' // ember_last_error())
  ! Ranks 1 and 5 reach the check too.
  call ember_forward(model, x1, y1, status)
  call check(status == EMBER_ERR_SHAPE .and. index(ember_last_error(), '(7,)') > 0, 'rank 1: ' // ember_last_error())
  call ember_forward(model, x5, y2, status)
  call check(status == EMBER_ERR_SHAPE .and. index(ember_last_error(), '(1, 1, 1, 1, 1)') > 0, 'rank 5: ' // ember_last_error())
  ! An output array of the wrong shape.
  allocate(longer(size(y) + product(ys(1:size(ys) - 1))))
  call forward_flat(model, x, xs, longer, [ys(1:size(ys) - 1), ys(size(ys)) + 1], status)
  call check(status == EMBER_ERR_SHAPE .and. index(ember_last_error(), 'output array of shape') > 0, &
             'output: ' // ember_last_error())
  ! Then a correct call succeeds and clears the message.
  call forward_flat(model, x, xs, y, ys, status)
  call check(status == EMBER_OK .and. len(ember_last_error()) == 0, 'after the errors: ' // ember_last_error())
  call ember_free(model)
  call ember_free(model)  ! twice is fine
  print '(a)', 'all errors reported'

contains

  function shape_text(s) result(text)
    integer, intent(in) :: s(:)
    character(len=:), allocatable :: text
    character(len=24) :: item
    integer :: i
    text = '('
    do i = 1, size(s)
      write(item, '(i0)') s(i)
      text = text // trim(item)
      if (i < size(s)) text = text // ', '
    end do
    text = text // ')'
  end function shape_text

end program check_errors
