import dataclasses

import pytest
from omegaconf import OmegaConf

from ember.config import DataCommon, EmberConfig, TrainerConfig, compose, group_options, typed
from ember.errors import ConfigError


def test_defaults_compose_to_the_default_job():
    cfg = compose()
    assert cfg.model.name == "cnn1d" and cfg.data.name == "mnist1d"
    assert cfg.optim.name == "adamw" and cfg.sched.name == "onecycle"
    # Model and data keys come from the builders' signatures, with their defaults.
    assert cfg.model.channels == 64 and cfg.data.num_samples == 5000


def test_documented_key_names_exist():
    cfg = compose()
    for key in ["trainer.max_epochs", "trainer.max_steps", "trainer.device", "trainer.precision", "trainer.seed",
                "trainer.deterministic", "trainer.compile", "optim.name", "optim.lr", "optim.weight_decay",
                "sched.name", "data.batch_size", "data.path", "data.root", "data.target", "run.dir", "resume"]:
        assert OmegaConf.select(cfg, key, default="missing") != "missing", key


def test_overrides_set_values_with_types():
    cfg = compose(["trainer.max_epochs=3", "optim.lr=0.5", "trainer.compile=true", "optim.betas=[0.8,0.9]"])
    assert cfg.trainer.max_epochs == 3 and isinstance(cfg.trainer.max_epochs, int)
    assert cfg.optim.lr == 0.5 and cfg.trainer.compile is True
    assert list(cfg.optim.betas) == [0.8, 0.9]


def test_group_selection_swaps_the_schema():
    cfg = compose(["model=mlp", "model.width=32"])
    assert cfg.model.name == "mlp" and cfg.model.width == 32
    assert "channels" not in cfg.model


def test_plus_override_sets_and_is_still_checked():
    assert compose(["+data.num_samples=800"]).data.num_samples == 800
    assert compose(["+experiment=poly_sine"]).model.name == "poly3"
    with pytest.raises(ConfigError, match="unknown key 'data.num_sample'; did you mean data.num_samples"):
        compose(["+data.num_sample=800"])


def test_experiment_overrides_groups_and_values():
    cfg = compose(["experiment=linear_regression"])
    assert (cfg.model.name, cfg.data.name, cfg.optim.name, cfg.sched.name) == ("ann", "linear", "sgd", "none")
    assert cfg.optim.lr == 0.01 and cfg.trainer.max_epochs == 1000 and cfg.data.batch_size == 100
    # Command-line values win over the experiment's.
    assert compose(["experiment=linear_regression", "trainer.max_epochs=5"]).trainer.max_epochs == 5


def test_the_fno_darcy_experiment_is_the_papers_recipe():
    cfg = compose(["experiment=fno_darcy"])
    assert (cfg.model.name, cfg.data.name, cfg.optim.name, cfg.sched.name) == ("fno", "darcy", "adam", "step")
    assert (cfg.model.modes, cfg.model.width, cfg.model.spectral_init, cfg.data.resolution, cfg.data.batch_size) == (
        12,
        32,
        "paper",
        85,
        20,
    )
    assert cfg.optim.weight_decay == pytest.approx(1e-4 / 20)  # the paper's 1e-4 on a loss summed over 20 samples
    assert cfg.sched.step_size * 5 == cfg.trainer.max_epochs and cfg.sched.gamma == 0.5  # halved every fifth of the run
    assert round(cfg.data.num_samples * cfg.data.test_fraction) == 100 and cfg.data.val_fraction == 0


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "trainer.max_epoch=3",
            r"unknown key 'trainer.max_epoch'; did you mean trainer.max_epochs\? valid keys of trainer: max_epochs, ",
        ),
        (
            "model.widht=3",
            r"unknown key 'model.widht'; valid keys of model: name, init, freeze, residual, channels, depth",
        ),
        ("foo=1", r"unknown key 'foo'; valid keys at the top level: model, data, optim"),
        ("model=resnet9000", r"unknown model 'resnet9000'; choose one of: .*cnn1d.*mlp"),
        ("optim=adan", r"unknown optim 'adan'; choose one of: adam, adamw, rmsprop, sgd"),
        ("experiment=nope", r"unknown experiment 'nope'; choose one of: fno_darcy, linear_regression, poly_sine"),
        ("trainer.max_epochs=abc", r"trainer.max_epochs='abc' has the wrong type; expected int"),
        ("trainer.compile=maybe", r"trainer.compile='maybe' has the wrong type; expected true or false"),
        (
            "optim.name=adan",
            r"optim.name='adan' is not a valid choice; did you mean adam\? choose one of: adam, adamw, rmsprop, sgd",
        ),
        (
            "trainer.precision=fp8",
            r"trainer.precision='fp8' is not a valid choice; choose one of: auto, fp32, bf16, fp16",
        ),
        ("trainer.device=gpu", r"trainer.device='gpu' is not a device"),
        ("model.name=mlp", r"select the model with model=mlp"),
        ("data.batch_size=0", r"data.batch_size=0 is out of range: it must be >= 1"),
        ("trainer.max_epochs", r"cannot parse override 'trainer.max_epochs'; write key=value"),
        # Hydra quotes only '[1'
        ("trainer.max_epochs=[1", r"cannot parse override 'trainer.max_epochs=\[1'; write key=value"),
        ("=3", r"cannot parse override '=3': it names no key; write key=value"),
    ],
)
def test_mistakes_are_one_line_errors_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        compose([override])
    assert "\n" not in str(info.value)


def test_model_keys_are_checked_for_the_selected_option():
    with pytest.raises(
        ConfigError, match=r"unknown key 'model.width'; valid keys of model: name, init, freeze, residual$"
    ):
        compose(["experiment=poly_sine", "model.width=3"])


def test_config_file_then_overrides(tmp_path):
    f = tmp_path / "my.yaml"
    f.write_text("model: mlp\noptim:\n  lr: 0.05\ntrainer:\n  max_epochs: 7\n")
    cfg = compose(["trainer.max_epochs=9"], config_file=f)
    assert cfg.model.name == "mlp" and cfg.optim.lr == 0.05
    assert cfg.trainer.max_epochs == 9  # the command line wins over the file


def test_config_file_mistakes(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        compose(config_file=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  max_epochz: 3\n")
    with pytest.raises(ConfigError, match="unknown key 'trainer.max_epochz'"):
        compose(config_file=bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("trainer: [1,\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        compose(config_file=broken)


def test_group_options_list_registries_and_files():
    assert "cnn1d" in group_options("model") and "mnist1d" in group_options("data")
    assert group_options("optim") == ["adam", "adamw", "rmsprop", "sgd"]
    assert set(group_options("sched")) == {"none", "step", "cosine", "plateau", "onecycle"}


# Overrides that cover every way compose handles them: group selections (also through an
# experiment that selects groups and sets keys), typed values, lists, `+`, `++` into open keys,
# `~` deletion, trackers, and mistakes whose one-line messages must not change.
PARITY_CASES = [
    [],
    ["trainer.max_epochs=3", "optim.lr=0.5", "optim.betas=[0.8,0.9]", "trainer.compile=true"],
    ["model=mlp", "model.width=32", "data=mnist1d", "data.batch_size=128", "sched=cosine"],
    ["experiment=linear_regression", "trainer.max_epochs=7", "optim.lr=0.1"],
    ["+experiment=poly_sine", "+data.num_samples=800", "tune.space.lr={type:float,low:0.001,high:0.1}"],
    ["track=csv,tensorboard", "run.name=x", "resume=null", "tune.space.lr={type:float,low:0.1,high:1}",
     "~tune.space.lr"],
    ["trainer=debug", "trainer.max_steps=3"],
]
PARITY_ERRORS = [
    ["trainer.max_epoch=5"],
    ["trainer.max_epochs=abc"],
    ["trainer.compile=maybe"],
    ["model.widht=3", "model=mlp"],
    ["+trainer.nonsense=1"],
    ["trainer.max_epochs=[1"],
    ["~trainer.nothing"],
    ["~run.dir"],
]


def test_composition_equals_hydras_own():
    """compose() caches what the group selections compose to and applies key=value overrides to a
    copy with OmegaConf (by Hydra's rules for them): the configs are those of composing everything
    through Hydra, and what Hydra refuses compose refuses, in one line."""
    import sys

    compose_module = sys.modules["ember.config.compose"]  # the module; ember.config.compose is the function
    for overrides in PARITY_CASES:
        hydra = compose_module.hydra_compose_all(compose_module._prepared(overrides))
        assert OmegaConf.to_yaml(compose(overrides)) == OmegaConf.to_yaml(hydra), overrides
    for overrides in PARITY_ERRORS:
        with pytest.raises(ConfigError) as info:
            compose(overrides)
        assert "\n" not in str(info.value), overrides
        if overrides != ["+trainer.nonsense=1"]:  # Hydra adds it; ember's check_keys refuses it
            with pytest.raises(Exception):
                hydra = compose_module.hydra_compose_all(compose_module._prepared(overrides))
                compose_module.check_values(hydra)


def test_a_cached_base_is_never_shared():
    a = compose(["trainer.max_epochs=3"])
    a.trainer.max_epochs = 99
    a.optim.betas[0] = 0.1
    b = compose([])
    assert b.trainer.max_epochs == 20 and b.optim.betas[0] == 0.9


@pytest.mark.parametrize("name", ["../../x", "/tmp/elsewhere", "a/b", ".."])
def test_a_run_name_that_leaves_the_runs_folder_is_refused_before_anything_is_made(ember_cli, tmp_path, name):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    r = ember_cli("train", f"run.name={name}", "trainer.max_epochs=1", cwd=work)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: run.name={name!r} is not a plain folder name"), r.stderr
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["a", "a/b"]


def test_a_study_name_that_leaves_the_runs_folder_is_refused():
    with pytest.raises(ConfigError, match=r"tune.name='../x' is not a plain folder name"):
        compose(["tune.name=../x"])
    assert compose(["run.name=my-experiment"]).run.name == "my-experiment"


def test_a_config_file_that_is_not_utf8_is_one_line_naming_the_byte(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("run:\n  name: café\n".encode("latin-1"))
    with pytest.raises(
        ConfigError, match=r"config file '.*latin1.yaml' is not UTF-8 text \(byte 0xe9 at offset 16\); save it as UTF-8"
    ):
        compose([], config_file=path)


def test_typed_builds_the_schemas_dataclasses_with_every_value():
    cfg = compose(["model=mlp", "model.width=32", "optim=sgd", "trainer.max_epochs=3", "track=csv"])
    t = typed(cfg)
    assert isinstance(t, EmberConfig) and isinstance(t.trainer, TrainerConfig) and isinstance(t.data, DataCommon)
    assert type(t.model).__name__ == "mlp_model_config" and t.model.width == 32
    assert t.optim.name == "sgd" and t.trainer.max_epochs == 3 and t.track == ["csv"]
    # Nothing is lost: the dataclasses hold what the DictConfig holds (the checkpoint saves them).
    assert dataclasses.asdict(t) == OmegaConf.to_container(cfg, resolve=True)


def test_compose_typed_hands_back_the_config_its_check_typed(typings):
    from ember.config import compose_saved, compose_typed

    cfg, conf = compose_typed(["model=mlp", "model.width=32", "trainer.max_epochs=3"])
    assert len(typings) == 1  # the check's dataclasses are the ones handed back, not built again
    assert conf.model.width == 32 and conf.trainer.max_epochs == 3
    assert dataclasses.asdict(conf) == OmegaConf.to_container(cfg, resolve=True)
    saved, conf = compose_typed(["optim.lr=0.5"], saved=cfg)
    assert (
        conf.optim.lr == 0.5
        and conf.model.width == 32
        and OmegaConf.to_yaml(saved) == OmegaConf.to_yaml(compose_saved(cfg, ["optim.lr=0.5"]))
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["~trainer.nothing"], r"unknown key 'trainer.nothing'; valid keys of trainer: max_epochs"),
        (["~trainer.max_epochs=3"], r"cannot delete trainer.max_epochs=3: trainer.max_epochs is 20"),
        (["~resume"], r"cannot delete resume: it is already null"),
        (["trainer.max_epochs=1,2"], r"cannot parse override 'trainer.max_epochs=1,2': it gives several values"),
        (["model@x=mlp"], r"cannot parse override 'model@x=mlp': ember takes no @package"),
        (["trainer.foo.bar=1"], r"unknown key 'trainer.foo'; valid keys of trainer: max_epochs"),
        (["run.name='a${b}'"], r"cannot resolve run.name: Interpolation key 'b' not found"),
    ],
)
def test_deletions_sweeps_and_packages_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        compose(overrides)
    assert "\n" not in str(info.value)


def _saved(overrides):
    """A run's config.yaml as RunDir.config() reads it back: resolved, every `${` kept literal."""
    from ember.rundir.directory import literal

    return OmegaConf.create(literal(OmegaConf.to_container(compose(overrides), resolve=True)))


def test_a_saved_config_composes_again_with_the_overrides_on_top():
    from ember.config import compose_saved

    saved = _saved(["model=mlp", "model.width=32", "optim=sgd", "tune.space.lr={type:float,low:0.1,high:1}"])
    cfg = compose_saved(saved, ["trainer.max_epochs=3", "optim.lr=0.5"])
    assert (cfg.model.name, cfg.model.width, cfg.optim.name) == ("mlp", 32, "sgd")
    assert cfg.trainer.max_epochs == 3 and cfg.optim.lr == 0.5 and cfg.tune.space.lr.high == 1
    assert OmegaConf.to_yaml(compose_saved(saved)) == OmegaConf.to_yaml(saved)  # nothing lost, nothing added


def test_a_saved_config_keeps_text_that_looks_like_an_interpolation(tmp_path):
    from ember.config import compose_saved

    saved = _saved([])
    saved.run.name = "a\\${oc.env:HOME}"  # what ember.rundir.directory.literal makes of a saved "a${oc.env:HOME}"
    cfg = compose_saved(saved, [f"run.root={tmp_path}"])
    assert typed(cfg).run.name == "a${oc.env:HOME}"


def test_a_saved_config_with_a_key_no_schema_knows_is_one_line():
    from ember.config import compose_saved

    saved = _saved([])
    saved.trainer.max_epochz = 3
    with pytest.raises(
        ConfigError, match=r"^the saved config: unknown key 'trainer.max_epochz'; did you mean trainer.max_epochs\?"
    ):
        compose_saved(saved)
    with pytest.raises(ConfigError, match=r"^unknown key 'trainer.max_epoch'; did you mean"):
        compose_saved(_saved([]), ["trainer.max_epoch=3"])


def test_a_config_file_merges_as_its_overrides_would_set_it(tmp_path):
    from ember.config.compose import file_overrides

    f = tmp_path / "f.yaml"
    f.write_text(
        "model:\n  name: mlp\n  width: 48\ntrainer.max_epochs: 5\ntune:\n  space:\n"
        "    optim.lr: {type: float, low: 0.001, high: 0.1}\n"
    )
    cfg = compose(["optim.lr=0.5"], config_file=f)
    assert (cfg.model.name, cfg.model.width, cfg.trainer.max_epochs, cfg.optim.lr) == ("mlp", 48, 5, 0.5)
    assert cfg.tune.space.optim.lr.high == 0.1  # dotted keys are nested keys at any depth
    assert OmegaConf.to_yaml(cfg) == OmegaConf.to_yaml(compose(file_overrides(f) + ["optim.lr=0.5"]))
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: abc\n")
    with pytest.raises(
        ConfigError, match=r"^config file '.*bad.yaml': optim.lr='abc' has the wrong type; expected float$"
    ):
        compose(config_file=bad)
