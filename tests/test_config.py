import tomllib

import pytest

from common.config import config_from_dict, dump_config, load_config
from common.errors import UserError


@pytest.mark.parametrize("profile", ["demo", "paper"])
def test_profile_round_trips_through_written_toml(profile):
    cfg = load_config(profile)
    assert config_from_dict(tomllib.loads(dump_config(cfg))) == cfg


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


def test_paper_profile_refuses_to_train_without_a_choice_of_imagenet_weights():
    from common.config import for_inference, require_pretrained_choice

    paper = load_config("paper")
    with pytest.raises(UserError, match=r"fusion\.backbone\.pretrained is 'required'.*--pretrained PATH.*--pretrained none"):
        require_pretrained_choice(paper, gan=False)
    with pytest.raises(UserError, match=r"gan\.pretrained"):
        require_pretrained_choice(paper, gan=True, fusion=False)
    chosen = load_config("paper", overrides={"gan": {"pretrained": "none"}, "fusion": {"backbone": {"pretrained": "none"}}})
    require_pretrained_choice(chosen, gan=True)  # an explicit 'none' trains from scratch
    require_pretrained_choice(load_config("demo"), gan=True)  # the demo profile trains from scratch by design
    # a trained model is rebuilt without reading any ImageNet file
    rebuilt = for_inference(load_config("paper", overrides={"fusion": {"backbone": {"pretrained": "/gone/resnet50.pth"}}}))
    assert rebuilt.fusion.backbone.pretrained == "none" and rebuilt.gan.pretrained == "none"
    assert rebuilt.fusion.backbone.layers == paper.fusion.backbone.layers


def test_amp_dtype_is_bf16_in_both_profiles_and_fp16_is_the_references_choice():
    assert load_config("paper").fusion.amp_dtype == load_config("demo").fusion.amp_dtype == "bf16"
    assert load_config("paper", overrides={"fusion": {"amp_dtype": "fp16"}}).fusion.amp_dtype == "fp16"
    with pytest.raises(UserError, match="fusion.amp_dtype 'fp32' is unknown; use bf16 or fp16"):
        load_config("paper", overrides={"fusion": {"amp_dtype": "fp32"}})
