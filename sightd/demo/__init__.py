"""`sightd demo`: the whole product on digits, with no camera and no data of one's own."""
