program classify
  use, intrinsic :: iso_fortran_env, only: real32
  use ember_infer
  implicit none
  type(ember_model) :: model
  real(real32) :: signals(64, 1, 40), logits(64, 10)   ! (batch, channel, position) -> (batch, class)
  character(len=1024) :: path
  integer :: status, i

  call get_command_argument(1, path)                    ! e.g. runs/mnist1d-cnn1d/<time>/export/model.aoti.pt2
  call random_number(signals)                           ! your data, in the units of the training data
  call ember_load(model, path, status)
  if (status /= EMBER_OK) error stop ember_last_error()
  call ember_forward(model, signals, logits, status)
  if (status /= EMBER_OK) error stop ember_last_error()
  print '(a, 64i2)', 'classes:', (maxloc(logits(i, :)) - 1, i = 1, 64)
  call ember_free(model)
end program classify
