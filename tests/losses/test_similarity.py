import faiss
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lit_matching.losses.similarity import Cosine, Dot, Euclidean, get_similarity

torch.manual_seed(0)


def loop_matrix(fn, q, c):
    return torch.stack([torch.stack([fn(qi, cj) for cj in c]) for qi in q])


REFERENCES = {
    "cosine": lambda a, b: (a @ b) / (a.norm() * b.norm()),
    "dot": lambda a, b: a @ b,
    "euclidean": lambda a, b: -((a - b) ** 2).sum(),
}


@pytest.mark.parametrize("name", ["cosine", "dot", "euclidean"])
def test_matrix_and_rowwise_match_loop_reference(name):
    sim = get_similarity(name)
    q, c = torch.randn(5, 7, dtype=torch.float64), torch.randn(9, 7, dtype=torch.float64)
    expected = loop_matrix(REFERENCES[name], q, c)
    torch.testing.assert_close(sim.matrix(q, c), expected)
    # row-wise with broadcasting: (5, 1, d) against (5, 9, d) equals the matrix
    torch.testing.assert_close(sim.rowwise(q[:, None], c[None].expand(5, -1, -1)), expected)
    torch.testing.assert_close(sim.rowwise(q, c[:5]), torch.diagonal(expected[:, :5]))
    # losses score prepared (for cosine: normalised) vectors without preparing them again
    prepared = sim.on_prepared()
    torch.testing.assert_close(prepared.matrix(sim.prepare(q), sim.prepare(c)), expected)
    torch.testing.assert_close(
        prepared.rowwise(sim.prepare(q), sim.prepare(c[:5])), expected.diagonal()
    )
    # the temperature-scaled matrix of the loss, also with a learned (tensor) temperature
    t = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(sim.scaled_matrix(q, c, 0.3), expected / 0.3)
    scaled = sim.scaled_matrix(q, c, t)
    torch.testing.assert_close(scaled, expected / 0.3)
    (grad,) = torch.autograd.grad(scaled.sum(), t)
    torch.testing.assert_close(grad, -expected.sum() / 0.3**2)


def test_normalised_dot_equals_cosine_and_l2_identity():
    q, c = torch.randn(6, 8, dtype=torch.float64), torch.randn(10, 8, dtype=torch.float64)
    qn, cn = F.normalize(q, dim=-1), F.normalize(c, dim=-1)
    cos = Cosine().matrix(q, c)
    torch.testing.assert_close(Dot().matrix(qn, cn), cos)
    # squared L2 between unit vectors == 2 - 2 cos
    torch.testing.assert_close(-Euclidean().matrix(qn, cn), 2 - 2 * cos)


def test_faiss_ip_on_normalised_vectors_ranks_as_cosine():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(20, 16)).astype(np.float32)
    c = rng.normal(size=(300, 16)).astype(np.float32)
    sim = Cosine()
    qn = sim.prepare(torch.from_numpy(q)).numpy()
    cn = sim.prepare(torch.from_numpy(c)).numpy()
    assert sim.faiss_metric == "ip"
    index = faiss.IndexFlatIP(16)
    index.add(cn)
    _, found = index.search(qn, 300)
    expected = np.argsort(-sim.matrix(torch.from_numpy(q), torch.from_numpy(c)).numpy(), axis=1)
    np.testing.assert_array_equal(found[:, :50], expected[:, :50])


@pytest.mark.parametrize(("name", "metric"), [("cosine", "ip"), ("dot", "ip"), ("euclidean", "l2")])
def test_faiss_metric_of_each_similarity(name, metric):
    assert get_similarity(name).faiss_metric == metric


def test_unknown_similarity_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown similarity 'manhattan'.*cosine"):
        get_similarity("manhattan")
