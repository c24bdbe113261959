! lorenz96 CLOSURE ARG INIT OUT STEPS EVERY: the one-scale Lorenz '96 model
!
!   dX_k/dt = -X_{k-1} (X_{k-2} - X_{k+1}) - X_k + F + U(X)_k,   k = 1..K (periodic),
!
! integrated with RK4 from a batch of initial states, where U, the tendency the unresolved fast
! variables exert on X, is the closure: CLOSURE none (U = 0), cubic (ARG "b0,b1,b2,b3": U_k =
! b0 + b1 X_k + b2 X_k^2 + b3 X_k^3, Arnold et al. 2013) or net (ARG: an ember export of data=lorenz96,
! called through `use ember_infer` at every RK4 stage of every step, the whole batch at once).
!
! INIT (text): "B K", then "F dt", then B lines of K values. OUT (raw float64): X after every
! EVERY steps, starting with the initial states, each snapshot an array x(B, K) in Fortran order.
! Prints the wall time of the time stepping per step.
program lorenz96
  use, intrinsic :: iso_fortran_env, only: int64, real64
  use ember_infer
  implicit none
  type(ember_model) :: model
  character(len=1024) :: closure, arg, init, out, text
  integer :: b, k, steps, every, step, unit, i
  integer(int64) :: start, finish, rate
  real(real64) :: forcing, dt, coeffs(4)
  real(real64), allocatable :: x(:, :), k1(:, :), k2(:, :), k3(:, :), k4(:, :), net_in(:, :, :), net_out(:, :)

  call get_command_argument(1, closure)
  call get_command_argument(2, arg)
  call get_command_argument(3, init)
  call get_command_argument(4, out)
  call get_command_argument(5, text)
  read(text, *) steps
  call get_command_argument(6, text)
  read(text, *) every

  open(newunit=unit, file=init, status='old', action='read')
  read(unit, *) b, k
  read(unit, *) forcing, dt
  allocate(x(b, k), k1(b, k), k2(b, k), k3(b, k), k4(b, k))
  do i = 1, b
    read(unit, *) x(i, :)
  end do
  close(unit)

  select case (closure)
  case ('none')
  case ('cubic')
    read(arg, *) coeffs
  case ('net')
    ! The network takes a batch of states (B, 1, K), as trained, and returns U as (B, K).
    call ember_load(model, arg)
    allocate(net_in(b, 1, k), net_out(b, k))
  case default
    error stop 'CLOSURE must be none, cubic or net'
  end select

  open(newunit=unit, file=out, access='stream', form='unformatted', status='replace', action='write')
  write(unit) x
  call system_clock(start, rate)
  do step = 1, steps
    call tendency(x, k1)
    call tendency(x + dt / 2 * k1, k2)
    call tendency(x + dt / 2 * k2, k3)
    call tendency(x + dt * k3, k4)
    x = x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    if (mod(step, every) == 0) write(unit) x
  end do
  call system_clock(finish)
  close(unit)
  print '(a, i0, a, f12.3, a)', 'steps ', steps, ' us_per_step ', 1d6 * real(finish - start, real64) / rate / max(steps, 1), &
        ' (' // trim(closure) // ')'
  call ember_free(model)

contains

  subroutine tendency(state, dxdt)
    real(real64), intent(in) :: state(:, :)
    real(real64), intent(out) :: dxdt(:, :)
    ! cshift(state, -1, 2)(:, k) is X_{k-1}: the periodic neighbours along the K dimension.
    dxdt = -cshift(state, -1, 2) * (cshift(state, -2, 2) - cshift(state, 1, 2)) - state + forcing
    select case (closure)
    case ('cubic')
      dxdt = dxdt + coeffs(1) + state * (coeffs(2) + state * (coeffs(3) + state * coeffs(4)))
    case ('net')
      net_in(:, 1, :) = state
      call ember_forward(model, net_in, net_out)
      dxdt = dxdt + net_out
    end select
  end subroutine tendency

end program lorenz96
