! use ember_infer: run an ember export (TorchScript or AOTInductor) from Fortran.
!
!   type(ember_model) :: model
!   real(real32) :: x(n1, n2, n3), y(m1, m2)       ! real32 or real64, rank 1 to 8
!   call ember_load(model, "model.aoti.pt2")
!   call ember_forward(model, x, y)
!   call ember_free(model)
!
! A Fortran array x(n1, ..., nk) is the tensor of shape (n1, ..., nk), batch first, as in FTorch:
! the C library reads the column-major memory with the matching strides, so no transposes here.
! The input's shape is checked against the export's sidecar (<path>.json), and the output array
! must have the shape the model returns.
!
! Errors: every procedure takes an optional `integer :: status`. Present, it receives EMBER_OK (0)
! or an error code, and ember_last_error() the message; absent, an error prints the message and
! stops the program (error stop), as a Fortran READ without IOSTAT= does.
module ember_infer
  use, intrinsic :: iso_c_binding, only: c_associated, c_char, c_f_pointer, c_int, c_int64_t, c_loc, c_null_char, &
                                         c_null_ptr, c_ptr, c_size_t
  use, intrinsic :: iso_fortran_env, only: error_unit, real32, real64
  implicit none
  private
  public :: ember_model, ember_load, ember_forward, ember_free, ember_last_error

  ! The status codes of ember_infer.h.
  integer, parameter, public :: EMBER_OK = 0, EMBER_ERR_FILE = 1, EMBER_ERR_SHAPE = 2, EMBER_ERR_DTYPE = 3, &
                                EMBER_ERR_RUNTIME = 4, EMBER_ERR_ARGUMENT = 5
  integer(c_int), parameter :: FLOAT32 = 0, FLOAT64 = 1, COLUMN_MAJOR = 1

  type :: ember_model
    private
    type(c_ptr) :: handle = c_null_ptr
  end type ember_model

  ! One procedure per kind: the arrays are assumed-rank (Fortran 2018), any rank the C side takes.
  interface ember_forward
    module procedure forward_real32, forward_real64
  end interface ember_forward

  interface
    integer(c_int) function c_load(path, model) bind(c, name="ember_load")
      import :: c_char, c_int, c_ptr
      character(kind=c_char), intent(in) :: path(*)
      type(c_ptr), intent(out) :: model
    end function c_load

    integer(c_int) function c_forward(model, dtype, order, input, ndim, shape, output, out_ndim, out_shape) &
        bind(c, name="ember_forward")
      import :: c_int, c_int64_t, c_ptr
      type(c_ptr), value :: model, input, output
      integer(c_int), value :: dtype, order, ndim, out_ndim
      integer(c_int64_t), intent(in) :: shape(*), out_shape(*)
    end function c_forward

    subroutine c_free(model) bind(c, name="ember_free")
      import :: c_ptr
      type(c_ptr), value :: model
    end subroutine c_free

    type(c_ptr) function c_last_error() bind(c, name="ember_last_error")
      import :: c_ptr
    end function c_last_error

    integer(c_size_t) function c_strlen(text) bind(c, name="strlen")
      import :: c_ptr, c_size_t
      type(c_ptr), value :: text
    end function c_strlen
  end interface

contains

  !> Load the export at `path` (trailing blanks are ignored; its sidecar path.json must be beside it).
  subroutine ember_load(model, path, status)
    type(ember_model), intent(inout) :: model
    character(len=*), intent(in) :: path
    integer, intent(out), optional :: status
    call ember_free(model)
    call finish(c_load(trim(path) // c_null_char, model%handle), status)
  end subroutine ember_load

  subroutine forward_real32(model, input, output, status)
    type(ember_model), intent(in) :: model
    real(real32), intent(in), target, contiguous :: input(..)
    real(real32), intent(out), target, contiguous :: output(..)
    integer, intent(out), optional :: status
    call finish(c_forward(model%handle, FLOAT32, COLUMN_MAJOR, c_loc(input), rank(input), shape(input, c_int64_t), &
                          c_loc(output), rank(output), shape(output, c_int64_t)), status)
  end subroutine forward_real32

  subroutine forward_real64(model, input, output, status)
    type(ember_model), intent(in) :: model
    real(real64), intent(in), target, contiguous :: input(..)
    real(real64), intent(out), target, contiguous :: output(..)
    integer, intent(out), optional :: status
    call finish(c_forward(model%handle, FLOAT64, COLUMN_MAJOR, c_loc(input), rank(input), shape(input, c_int64_t), &
                          c_loc(output), rank(output), shape(output, c_int64_t)), status)
  end subroutine forward_real64

  !> Release the model (a model never loaded, or already freed, is fine).
  subroutine ember_free(model)
    type(ember_model), intent(inout) :: model
    if (c_associated(model%handle)) call c_free(model%handle)
    model%handle = c_null_ptr
  end subroutine ember_free

  !> The message of the last failure in this thread ("" if the last call succeeded).
  function ember_last_error() result(message)
    character(len=:), allocatable :: message
    character(kind=c_char), pointer :: chars(:)
    type(c_ptr) :: text
    integer :: i
    text = c_last_error()
    call c_f_pointer(text, chars, [c_strlen(text)])
    allocate(character(len=size(chars)) :: message)
    do i = 1, size(chars)
      message(i:i) = chars(i)
    end do
  end function ember_last_error

  ! The status to the caller, or, without a status argument, the message and a stop.
  subroutine finish(code, status)
    integer(c_int), intent(in) :: code
    integer, intent(out), optional :: status
    if (present(status)) then
      status = code
    else if (code /= EMBER_OK) then
      write(error_unit, '(a)') 'ember_infer: ' // ember_last_error()
      error stop 'ember_infer: stopped; pass status= to handle the error in your program'
    end if
  end subroutine finish

end module ember_infer
