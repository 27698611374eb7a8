"""The numpy personal head (crossl.personal) on the same small case as the Rust unit test
(src/store/personal.rs, labelled_classes_follow_distance_and_unlabelled_ones_keep_general_proportions)."""

import numpy as np

from crossl import personal


def test_class_means_are_unit_length_means_of_normalised_embeddings():
    classes, means = personal.fit(np.array([[2.0, 0, 0], [0, 5.0, 0], [0, 0, 1.0]]), np.array([2, 2, 0]))
    s = np.sqrt(0.5)
    assert classes.tolist() == [0, 2]
    np.testing.assert_allclose(means, [[0, 0, 1], [s, s, 0]], atol=1e-12)


def test_labelled_classes_follow_distance_and_unlabelled_ones_keep_general_proportions():
    classes, means = personal.fit(np.array([[1.0, 0, 0], [0, 1.0, 0]]), np.array([0, 1]))
    general = np.array([[0.1, 0.1, 0.6, 0.2], [0.1, 0.1, 0.6, 0.2]])
    p = personal.probabilities(classes, means, general, np.array([[0, 3.0, 0], [0, 0, 1.0]]))
    t = personal.TEMPERATURE
    s0, s1, so = np.exp(-2 / t), 1.0, np.exp(-personal.REJECT_DISTANCE / t)
    total = s0 + s1 + so
    q = np.array([s0 / total, s1 / total, so / total * 0.75, so / total * 0.25])
    np.testing.assert_allclose(p[0], q, atol=1e-9)
    assert p[0].argmax() == 1
    # far from both labelled means: the unlabelled classes take the mass, in the general model's proportions
    assert p[1].argmax() == 2 and abs(p[1, 2] / p[1, 3] - 3) < 1e-9 and p[1, :2].max() < 1e-6
    np.testing.assert_allclose(p.sum(1), 1.0)
    # the product rule: the head's distribution times the general model's, renormalised
    prod = personal.probabilities(classes, means, general[:1], np.array([[0, 3.0, 0]]), combine="product")
    np.testing.assert_allclose(prod[0], q * general[0] / (q * general[0]).sum(), atol=1e-9)
    np.testing.assert_allclose(p.sum(1), 1.0)


def test_every_class_labelled_is_the_head_alone():
    classes, means = personal.fit(np.array([[1.0, 0, 0], [0, 1.0, 0]]), np.array([0, 1]))
    p = personal.probabilities(classes, means, np.array([[0.99, 0.01]]), np.array([[0.1, 1.0, 0]]))
    assert p[0].argmax() == 1
    np.testing.assert_allclose(p.sum(1), 1.0)


def test_the_product_rule_lets_a_sure_general_model_outvote_a_near_label():
    # as src/store/personal.rs, the_product_rule_multiplies_in_the_general_model_and_lets_it_outvote_a_near_label
    classes, means = personal.fit(np.array([[1.0, 0, 0], [0, 1.0, 0]]), np.array([0, 1]))
    sure, off = np.array([[0.0005, 0.0005, 0.998, 0.001]]), np.array([[0.3, 3.0, 0]])
    assert personal.probabilities(classes, means, sure, off)[0].argmax() == 1
    assert personal.probabilities(classes, means, sure, off, combine="product")[0].argmax() == 2
