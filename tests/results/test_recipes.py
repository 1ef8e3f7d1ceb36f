"""configs/recipe: the training recipes that several rows of a paper share, named by the rows and composable
into any run with +recipe=<name>; configs/tier/smoke.yaml, the smoke tier, likewise with +tier=smoke."""
import pytest
from omegaconf import OmegaConf

from conftest import REPO, qbench
from qbench.config import check_overrides, compose, group_options, option_settings
from qbench.errors import UserError
from qbench.results.registry import load_paper, paper_keys
from qbench.results.reproduce import _as_override, settings


def _rows_naming(recipe: str) -> list:
    return [f for k in paper_keys() for f in load_paper(k).figures if (f.experiment or {}).get("recipe") == recipe]


@pytest.mark.parametrize("name", group_options("recipe"))
def test_a_recipe_composes_as_the_settings_its_rows_run(name):
    """Hydra's composition of +recipe=<name> (its defaults, overrides of optim/sched, nested keys) equals the
    flat settings qbench reproduce gives the same row, key for key."""
    rows = _rows_naming(name)
    assert rows, f"configs/recipe/{name}.yaml is named by no row"
    e = rows[0].experiment
    identity = [f"method={e['method']}", f"model={e['model']}", f"dataset={e['dataset']}",
                *(_as_override(k, v) for k, v in (e.get("overrides") or {}).items())]
    by_group = compose(identity + [f"+recipe={name}"])
    by_settings = compose([_as_override(k, v) for k, v in settings(rows[0], "full").items()])
    assert OmegaConf.to_container(by_group, resolve=True) == OmegaConf.to_container(by_settings, resolve=True)


def test_a_staged_recipe_is_its_base_with_the_stages_epochs():
    base, staged = option_settings("recipe", "sq_vgg9"), option_settings("recipe", "sq_vgg9_staged")
    assert staged == {**base, "trainer.epochs": 800} and base["trainer.epochs"] == 200 and base["optim"] == "sgd"
    text = (REPO / "configs" / "recipe" / "sq_vgg9_staged.yaml").read_text()
    assert "sq_vgg9" in text and "optim" not in text  # written once, in sq_vgg9.yaml


def test_the_smoke_tier_is_a_config_and_composes_into_a_run():
    smoke = option_settings("tier", "smoke")
    assert smoke["trainer.epochs"] == 1 and smoke["data.subset"] == 256
    cfg = compose(["method=bnn", "model=mlp", "dataset=mnist", "+tier=smoke"])
    assert cfg.trainer.epochs == 1 and cfg.data.subset == 256 and cfg.data.val_subset == 256
    check_overrides(["method=sq_bwn", "model=vgg9", "+recipe=sq_vgg9", "+tier=smoke", "method.ratios=[1.0]"], data=False)


def test_an_unknown_recipe_is_one_line(tmp_path):
    with pytest.raises(UserError, match="unknown recipe 'nope'; valid: binaryconnect_mlp_mnist"):
        check_overrides(["+recipe=nope"], data=False)
    p = qbench("train", "+tier=fast", cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.strip() == "qbench: error: unknown tier 'fast'; valid: smoke"
    assert not (tmp_path / "runs").exists()
