-- v2, contract: no v1 runs any more. The trigger goes, then surname.
DROP TRIGGER IF EXISTS people_same_name ON people;
DROP FUNCTION IF EXISTS people_same_name();
ALTER TABLE people DROP COLUMN IF EXISTS surname;
