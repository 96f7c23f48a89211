"""A small procedural visible-infrared re-ID dataset in SYSU-MM01's on-disk layout.

The demo dataset lets the whole toolkit run (and be tested) without downloading SYSU-MM01
(Wu et al., ICCV 2017, "RGB-Infrared Cross-Modality Person Re-Identification"). It is
written *exactly* in SYSU-MM01's layout, so the SYSU-MM01 reader reads it unchanged::

    OUT/cam1/0001/0001.jpg ... OUT/cam6/<pid %04d>/<n %04d>.jpg   n = 0001, 0002, ... per (cam, pid)
    OUT/exp/train_id.txt    one line of comma-separated ids, e.g. "3,7,12"
    OUT/exp/val_id.txt      same
    OUT/exp/test_id.txt     same
    OUT/aligned_nir/cam<k>/<pid>/<n>.jpg   ground truth for stage 1 (see below)
    OUT/demo_info.json      generator version, arguments and image count; written last

Cameras 1, 2, 4 and 5 are visible (RGB), 3 and 6 infrared, as in SYSU-MM01: cam1 and cam2 are
indoor rooms, cam3 is an infrared camera in cam2's room, cam4 ("gate") and cam5 ("garden") are
outdoor visible cameras and cam6 ("street") is an outdoor infrared camera. Infrared images are
stored as 3-channel JPEGs whose channels are equal, like SYSU-MM01's.

Near-infrared physics (``physics="nir"``, the default)
------------------------------------------------------
SYSU-MM01's cameras 3 and 6 and LLCM's infrared cameras are near-infrared cameras with an
active illuminator (about 850 nm): a pixel's brightness is the *reflectance* of the surface
in that band under the camera's own lamp, not its heat. The demo renders exactly that:

* **Dyes.** Every garment, hat, shoe and bag material is one of the 20 dyes of the palette,
  and each dye has one fixed near-infrared reflectance (``DYE_NIR``), shared by every
  identity that wears it. Most dyes are bright (0.62-0.84): many organic textile dyes are
  nearly transparent above about 750 nm, so the fabric shows its fibre's own high
  reflectance whatever its visible colour. A few are dark (0.06-0.30): carbon-black
  pigments absorb across the near infrared (black, the carbon-tinted grey, olive and slate
  prints; Mallakpour group, IUT, "Effect of carbon black nanoparticles on reflective
  behavior of printed cotton/nylon fabrics in visible/near infrared regions"; US patent
  11,656,388: black fabrics "absorb ... near-IR electromagnetic radiation with a wavelength
  of greater than about 750 nanometers"). The table is therefore *not* a function of
  luminance: navy, burgundy and purple are dark in visible light and bright here, grey is
  mid-grey in visible light and dark here (``test_demo.py`` checks that no affine function
  of luminance explains it). Visible colour matches that split in the near infrared are
  the subject of Prosser & Arruda, "Color matching spanning the visible and
  near-infrared", US Army Natick TR-90/006 (1989).
* **Fibres.** Each garment material is one of four fibres (cotton, polyester, wool, nylon)
  whose factor (``FIBRE_NIR``, 0.8-1.0) multiplies the dye's reflectance: per-fibre
  variation around the dye, the same for everyone with that dye and fibre.
* **Skin and hair.** Skin reflects strongly at 850 nm, where melanin absorbs far less than
  in visible light, so skin tones that differ a lot in visible light differ little here
  (0.44-0.60; Jacquez et al., "Spectral reflectance of human skin in the region 0.7-2.6 µ",
  J. Appl. Physiol. 1955: pigmentation differences appear only below 1 µm; Cooksey &
  Allen, Proc. SPIE 8734, 2013). Dark hair is brighter than in visible light (0.14-0.50).
* **Scenes.** Walls, floors and panels use the dye table as paints; foliage and grass are
  bright (0.45-0.55, the near-infrared plateau of leaves), asphalt and glass dark, the
  night sky black (the lamp does not reach it); reflectance factors of natural objects in
  700-1200 nm lie within 10-80 % (Khajeh Mehrizi et al., ICCC 2013), and all ours do.
* **Camera.** The lamp sits by the lens: brightness falls off from the lit centre
  (``1 - k r^2``, k 0.25-0.5 per camera), the background is further from the lamp than the
  person (x 0.45-0.85), shading follows the surface normal, the exposure varies per image
  (x 0.85-1.15, automatic gain), and the sensor adds shot noise (variance proportional to
  the signal) and read noise, then the optics blur.

A garment's near-infrared brightness is thus a property of its dye and fibre that a
visible-to-infrared translation can learn from the visible colour and a grayscale copy
cannot. What carries across modalities as well is geometry: body shape, skirt versus
trousers, sleeve length, pattern orientation and frequency, hair and accessory shape.

``physics="thermal"`` keeps the version-2 rendering (far-infrared heat per material,
independent of its colour, over heat scenes, with bloom: RegDB-like).

Ground truth for stage 1
------------------------
For every visible image ``cam<k>/<pid>/<n>.jpg`` the demo also writes the same scene
(person, pose, camera geometry, background) rendered as the infrared physics would see it,
under the camera's near-infrared twin (its own lamp, exposure and noise):
``aligned_nir/cam<k>/<pid>/<n>.jpg`` (``aligned_thermal/`` for thermal physics).
``pipeline eval-gan --dataset demo`` scores the DSGAN's translation against it.

What is drawn
-------------
Every image is a pedestrian drawn from body-local coordinates (``u`` down the body from the
top of the head, ``x`` across it, both in units of the person's height) into a *material
label map*: background, skin, hair, hat, two top-garment materials, two bottom-garment
materials, shoes and bag. Garment patterns (solid, horizontal or vertical stripes, checks)
decide which of a garment's two materials covers a pixel.

* Per identity (fixed across cameras): stature, head size, shoulder and hip width, leg
  length, sleeve length, trousers / shorts / skirt, garment patterns with their stripe
  frequency and phase, a dye and a fibre per material (hence its visible colour and its
  near-infrared reflectance), skin tone, hair (short, long, or a hat) and its colour,
  accessory (none, backpack, shoulder bag on the left or right), and a heat per material
  for thermal physics.
* Per camera (fixed for a seed): a background scene, lighting gain and colour cast, the
  person's typical scale and foot line, blur and noise, and the near-infrared lamp.
* Per image: scale (+-10 %) and position jitter, lean, walking pose (arm swing, leg spread,
  a lifted foot), front or back view, a horizontal flip with p = 0.5 (which mirrors the bag
  side), lighting or exposure jitter and the noise realisation.

Determinism: every random draw comes from ``np.random.SeedSequence(seed, spawn_key=...)``
keyed by what it describes (the identity number, the camera, the image), so the same
arguments give byte-identical files, and an identity looks the same whatever the split
sizes. The discrete attributes of all 533 possible identities are distinct by construction
(each identity gets its own cell of the attribute grid), and the identities that
:func:`pretrain_identity` draws for the ImageNet stand-in (``common.demo.standin``) take other
cells, so no stand-in identity is a demo identity.
"""
