"""Scaling studies: does a bigger network do better, at equal epochs and at equal compute?"""
