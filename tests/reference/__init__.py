"""Independent implementations of the merge methods, written from the papers' reference code.

Each module names the repository and file it follows. They share no code with ``dithub.algorithms.merge``
(tests check that no module here imports dithub) and favour the reference's own formulation
(stack, sort, kthvalue) over speed; dithub's methods are compared with them in
``tests/test_reference_methods.py``. Every function takes the N task-vector tensors of one weight
and returns the merged tensor (dithub applies the methods tensor by tensor).
"""
