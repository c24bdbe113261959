! What the test programs share: forward_flat(model, x, xs, y, ys, status), ember_forward on flat
! arrays viewed at the ranks (1 to 5) and shapes xs and ys, so one program runs models of any
! rank; read_case, a case's shapes and tolerances; values(file, count), float64 values from a raw
! file; check(ok, what), a failed test's stop.
module checks
  use, intrinsic :: iso_fortran_env, only: real32, real64
  use ember_infer
  implicit none
  private
  public :: check, forward_flat, read_case, values

  interface forward_flat
    module procedure forward32, forward64
  end interface forward_flat

contains

  ! CASE.txt: the input's rank and shape, the output's rank and shape, then atol and rtol.
  subroutine read_case(case, xs, ys, atol, rtol)
    character(len=*), intent(in) :: case
    integer, allocatable, intent(out) :: xs(:), ys(:)
    real(real64), intent(out) :: atol, rtol
    integer :: u, r, s(5)
    open(newunit=u, file=trim(case) // '.txt', status='old', action='read')
    read(u, *) r, s(1:r)
    xs = s(1:r)
    read(u, *) r, s(1:r)
    ys = s(1:r)
    read(u, *) atol, rtol
    close(u)
  end subroutine read_case

  function values(file, count) result(v)
    character(len=*), intent(in) :: file
    integer, intent(in) :: count
    real(real64), allocatable :: v(:)
    integer :: u
    allocate(v(count))
    open(newunit=u, file=file, access='stream', form='unformatted', status='old', action='read')
    read(u) v
    close(u)
  end function values

  subroutine check(ok, what)
    logical, intent(in) :: ok
    character(len=*), intent(in) :: what
    if (.not. ok) then
      print '(a)', 'FAILED: ' // what
      error stop 1
    end if
  end subroutine check

  ! The flat input viewed at its rank (1 to 5), then the output at its own.
  subroutine forward64(model, x, xs, y, ys, status)
    type(ember_model), intent(in) :: model
    real(real64), intent(in), target, contiguous :: x(:)
    real(real64), intent(inout), target, contiguous :: y(:)
    integer, intent(in) :: xs(:), ys(:)
    integer, intent(out) :: status
    real(real64), pointer, contiguous :: x1(:), x2(:, :), x3(:, :, :), x4(:, :, :, :), x5(:, :, :, :, :)
    select case (size(xs))
    case (1); x1(1:xs(1)) => x; call out64(model, x1, y, ys, status)
    case (2); x2(1:xs(1), 1:xs(2)) => x; call out64(model, x2, y, ys, status)
    case (3); x3(1:xs(1), 1:xs(2), 1:xs(3)) => x; call out64(model, x3, y, ys, status)
    case (4); x4(1:xs(1), 1:xs(2), 1:xs(3), 1:xs(4)) => x; call out64(model, x4, y, ys, status)
    case (5); x5(1:xs(1), 1:xs(2), 1:xs(3), 1:xs(4), 1:xs(5)) => x; call out64(model, x5, y, ys, status)
    end select
  end subroutine forward64

  subroutine out64(model, x, y, ys, status)
    type(ember_model), intent(in) :: model
    real(real64), intent(in), contiguous :: x(..)
    real(real64), intent(inout), target, contiguous :: y(:)
    integer, intent(in) :: ys(:)
    integer, intent(out) :: status
    real(real64), pointer, contiguous :: y1(:), y2(:, :), y3(:, :, :), y4(:, :, :, :), y5(:, :, :, :, :)
    select case (size(ys))
    case (1); y1(1:ys(1)) => y; call ember_forward(model, x, y1, status)
    case (2); y2(1:ys(1), 1:ys(2)) => y; call ember_forward(model, x, y2, status)
    case (3); y3(1:ys(1), 1:ys(2), 1:ys(3)) => y; call ember_forward(model, x, y3, status)
    case (4); y4(1:ys(1), 1:ys(2), 1:ys(3), 1:ys(4)) => y; call ember_forward(model, x, y4, status)
    case (5); y5(1:ys(1), 1:ys(2), 1:ys(3), 1:ys(4), 1:ys(5)) => y; call ember_forward(model, x, y5, status)
    end select
  end subroutine out64

  subroutine forward32(model, x, xs, y, ys, status)
    type(ember_model), intent(in) :: model
    real(real32), intent(in), target, contiguous :: x(:)
    real(real32), intent(inout), target, contiguous :: y(:)
    integer, intent(in) :: xs(:), ys(:)
    integer, intent(out) :: status
    real(real32), pointer, contiguous :: x1(:), x2(:, :), x3(:, :, :), x4(:, :, :, :), x5(:, :, :, :, :)
    select case (size(xs))
    case (1); x1(1:xs(1)) => x; call out32(model, x1, y, ys, status)
    case (2); x2(1:xs(1), 1:xs(2)) => x; call out32(model, x2, y, ys, status)
    case (3); x3(1:xs(1), 1:xs(2), 1:xs(3)) => x; call out32(model, x3, y, ys, status)
    case (4); x4(1:xs(1), 1:xs(2), 1:xs(3), 1:xs(4)) => x; call out32(model, x4, y, ys, status)
    case (5); x5(1:xs(1), 1:xs(2), 1:xs(3), 1:xs(4), 1:xs(5)) => x; call out32(model, x5, y, ys, status)
    end select
  end subroutine forward32

  subroutine out32(model, x, y, ys, status)
    type(ember_model), intent(in) :: model
    real(real32), intent(in), contiguous :: x(..)
    real(real32), intent(inout), target, contiguous :: y(:)
    integer, intent(in) :: ys(:)
    integer, intent(out) :: status
    real(real32), pointer, contiguous :: y1(:), y2(:, :), y3(:, :, :), y4(:, :, :, :), y5(:, :, :, :, :)
    select case (size(ys))
    case (1); y1(1:ys(1)) => y; call ember_forward(model, x, y1, status)
    case (2); y2(1:ys(1), 1:ys(2)) => y; call ember_forward(model, x, y2, status)
    case (3); y3(1:ys(1), 1:ys(2), 1:ys(3)) => y; call ember_forward(model, x, y3, status)
    case (4); y4(1:ys(1), 1:ys(2), 1:ys(3), 1:ys(4)) => y; call ember_forward(model, x, y4, status)
    case (5); y5(1:ys(1), 1:ys(2), 1:ys(3), 1:ys(4), 1:ys(5)) => y; call ember_forward(model, x, y5, status)
    end select
  end subroutine out32

end module checks
