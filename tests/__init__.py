"""Tests of asu-ci."""
