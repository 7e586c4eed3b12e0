"""Tiny models of the vision families, built once per test session."""

import pytest

from skvlm.testing import (
    make_tiny_clip,
    make_tiny_siglip,
    make_tiny_siglip2,
    make_tiny_vit,
    random_images,
)


@pytest.fixture(scope="session")
def clip_path(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="session")
def siglip_path(tmp_path_factory):
    return make_tiny_siglip(tmp_path_factory.mktemp("siglip"))


@pytest.fixture(scope="session")
def siglip2_path(tmp_path_factory):
    return make_tiny_siglip2(tmp_path_factory.mktemp("siglip2"))


@pytest.fixture(scope="session")
def vit_path(tmp_path_factory):
    return make_tiny_vit(tmp_path_factory.mktemp("vit"))


@pytest.fixture(scope="session")
def dinov2_path(tmp_path_factory):
    return make_tiny_vit(tmp_path_factory.mktemp("dinov2"), kind="dinov2")


@pytest.fixture
def images():
    return random_images(6)
