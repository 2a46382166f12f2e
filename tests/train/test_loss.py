"""The validation accuracies computed from episode scores."""
import torch

from train.loss import correct_choices, familiar_test_accuracy


def test_familiar_accuracy_is_the_share_of_negatives_beaten_and_top1_needs_all():
    # Row 0 beats all 3 negatives; row 1 beats 2 of 3; row 2 ties one negative and beats none.
    scores = torch.tensor([[0.9, 0.1, 0.2, 0.3],
                           [0.5, 0.1, 0.6, 0.2],
                           [0.1, 0.1, 0.4, 0.5]])
    assert torch.allclose(familiar_test_accuracy(scores), torch.tensor([1.0, 2 / 3, 0.0]))
    assert correct_choices(scores).tolist() == [True, False, False]
