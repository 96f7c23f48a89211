import tomllib

import pytest

from common.config import config_from_dict, dump_config, load_config
from common.errors import UserError


@pytest.mark.parametrize("profile", ["demo", "paper"])
def test_profile_round_trips_through_written_toml(profile):
    cfg = load_config(profile)
    assert config_from_dict(tomllib.loads(dump_config(cfg))) == cfg


def test_paper_profile_holds_the_papers_settings():
    cfg = load_config("paper")
    assert (cfg.data.height, cfg.data.width) == (288, 144)
    assert cfg.fusion.backbone.layers == (3, 4, 6, 3) and cfg.fusion.backbone.nonlocal_blocks == (0, 2, 3, 0)
    agw, tsme = cfg.fusion.recipe("agw"), cfg.fusion.recipe("tsme")
    assert (agw.ids_per_batch, agw.images_per_id, agw.warmup_epochs, agw.milestones) == (8, 4, 10, (20, 50))
    assert (tsme.ids_per_batch, tsme.images_per_id, tsme.hc_weight, tsme.milestones) == (4, 6, 0.5, (20, 40, 60))
    assert (cfg.gan.lambda_cycle, cfg.gan.lambda_identity, cfg.gan.pool_size, cfg.gan.lr) == (10.0, 5.0, 50, 2e-4)


def test_config_file_overrides_profile(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text("[gan]\nepochs = 7\n[fusion.recipes.tsme]\nlr = 0.05\n")
    cfg = load_config("demo", path)
    assert cfg.gan.epochs == 7 and cfg.fusion.recipe("tsme").lr == 0.05
    assert cfg.gan.batch_size == load_config("demo").gan.batch_size  # untouched keys kept


@pytest.mark.parametrize(
    "text, fragment",
    [("[gan]\nepochz = 3\n", "gan.epochz"), ("[gan]\nepochs = 'many'\n", "gan.epochs"),
     ("[eval]\nshots = 5\n", "eval.shots"), ("[gan\n", "not valid TOML")],
)
def test_bad_config_is_one_line_user_error(tmp_path, text, fragment):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=fragment.replace(".", r"\.")) as info:
        load_config("demo", path)
    assert "\n" not in str(info.value)


def test_unknown_profile_and_missing_file():
    with pytest.raises(UserError, match="unknown profile"):
        load_config("huge")
    with pytest.raises(UserError, match="does not exist"):
        load_config("demo", config_file="/nonexistent/cfg.toml")
