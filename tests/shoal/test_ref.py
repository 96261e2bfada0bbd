import pytest

from shoal.errors import InvalidRef
from shoal.ref import DEFAULT_HOST, ModelRef


@pytest.mark.parametrize(
    ("text", "host", "namespace", "name", "tag"),
    [
        ("deepseek-r1:7b", DEFAULT_HOST, "library", "deepseek-r1", "7b"),
        ("llama3", DEFAULT_HOST, "library", "llama3", "latest"),
        ("user/model:v1.2_q4-K", DEFAULT_HOST, "user", "model", "v1.2_q4-K"),
        ("registry.ollama.ai/library/qwen:0.5b", DEFAULT_HOST, "library", "qwen", "0.5b"),
        ("localhost:5000/ns/m", "localhost:5000", "ns", "m", "latest"),
        ("localhost/m:t", "localhost", "library", "m", "t"),
        ("Example.COM/m", "Example.COM", "library", "m", "latest"),
        ("hf.co/org/Model-GGUF:Q4_K_M", "hf.co", "org", "Model-GGUF", "Q4_K_M"),
        ("10.0.0.1:8080/a/b:c", "10.0.0.1:8080", "a", "b", "c"),
    ],
)
def test_parse(text: str, host: str, namespace: str, name: str, tag: str) -> None:
    ref = ModelRef.parse(text)
    assert (ref.host, ref.namespace, ref.name, ref.tag) == (host, namespace, name, tag)
    assert ModelRef.parse(str(ref)) == ref


def test_forms() -> None:
    ref = ModelRef.parse("deepseek-r1:7b")
    assert str(ref) == "library/deepseek-r1:7b"
    assert ref.short == "library/deepseek-r1:7b"
    assert ref.slug == "deepseek-r1-7b"
    assert str(ModelRef.parse("h.io:99/a/b:c")) == "h.io:99/a/b:c"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Foo:bar:baz",
        "../x",
        "..",
        "a/../b",
        "./x",
        "x:",
        ":tag",
        "/x",
        "x/",
        "a//b",
        "a/b/c/d",
        "na me",
        "name\x00",
        "näme",
        "-name",
        "name:-tag",
        "host:0/a/b",
        "host:99999/a/b",
        "host:port/a/b",
        "a" * 81,
        "x:" + "t" * 81,
        "bad_host!/a/b",
    ],
)
def test_rejects(text: str) -> None:
    with pytest.raises(InvalidRef) as exc:
        ModelRef.parse(text)
    assert "model reference" in exc.value.message
