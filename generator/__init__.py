"""rmsmp.generator"""
